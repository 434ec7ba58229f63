"""The tables role: the stack's tables as the stream and the core write and read them
outside Spark (the archive of events and the catalogue, the erasure record, the lake's
customer tables an erasure deletes from, the files a promotion replays).

`Tables` is what they need; `DeltaTables` keeps them as Delta tables with delta-rs, a
commit that lost a race with another writer (an archiver's merge, an erasure's delete,
a compaction) tried again a few times with a growing pause. The batch's Spark jobs have
their own side of the lake (batch.lake). `tests/recsys/test_tables_contract.py` holds
every implementation to the role.

Predicates are SQL over the table's columns; a merge's names the rows to write `s` and
the table's `t`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.schema import PrimitiveType

T = TypeVar("T")
COMMIT_RETRIES: Final = 5


@dataclass(frozen=True)
class TableFile:
    """One data file of a table version: its path in the table, when it was committed
    and the partition it holds (column -> value, as text)."""

    path: str
    committed_ms: int
    partition: dict[str, str | None] = field(default_factory=dict)


class Tables(Protocol):
    def ensure(self, path: Path, schema: pa.Schema, partition_by: Sequence[str] = ()) -> None:
        """Create the empty table if there is none (one there is left as it is)."""
        ...

    def exists(self, path: Path) -> bool: ...

    def version(self, path: Path) -> int | None:
        """The table's newest version (None: no table)."""
        ...

    def schema(self, path: Path) -> pa.Schema: ...

    def partition_columns(self, path: Path) -> list[str]: ...

    def add_timestamp_column(self, path: Path, name: str) -> None:
        """A nullable UTC timestamp column the table did not have (its rows get none)."""
        ...

    def append(self, path: Path, rows: pa.Table) -> None: ...

    def insert_new(self, path: Path, rows: pa.Table, match: str) -> int:
        """Insert the rows no row of the table matches; how many."""
        ...

    def upsert(self, path: Path, rows: pa.Table, match: str, replace_when: str) -> int:
        """Insert the rows nothing matches, replace a matched row where `replace_when`
        holds; how many rows were written."""
        ...

    def delete(self, path: Path, predicate: str) -> int:
        """Delete the rows the predicate holds for; how many."""
        ...

    def read(self, path: Path, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of the table's newest version (these columns only, where named)."""
        ...

    def files(self, path: Path, version: int | None = None) -> list[TableFile]:
        """The data files of a version (the newest: None), oldest commit first; raises
        LookupError where that version's log is gone."""
        ...

    def read_file(self, path: Path, file: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One data file's rows (partition columns are not in the file: `TableFile`)."""
        ...

    def compact(self, path: Path, sort_by: Sequence[str], partition: tuple[str, str]) -> int:
        """Rewrite one partition's files into few, sorted; how many files it replaced."""
        ...

    def vacuum(self, path: Path, retention_hours: float) -> int:
        """Delete the files no version newer than the retention needs; how many."""
        ...


def with_commit_retries(action: Callable[[], T], retries: int = COMMIT_RETRIES) -> T:
    """The action again, after a growing pause, while its commit loses a race."""
    for attempt in range(retries):
        try:
            return action()
        except CommitFailedError:
            if attempt == retries - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


class DeltaTables:
    """Delta tables on a local or mounted file system, through delta-rs."""

    def ensure(self, path: Path, schema: pa.Schema, partition_by: Sequence[str] = ()) -> None:
        if self.exists(path):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            str(path), schema.empty_table(), mode="ignore", partition_by=list(partition_by) or None
        )

    def exists(self, path: Path) -> bool:
        try:
            DeltaTable(str(path))
        except TableNotFoundError:
            return False
        return True

    def version(self, path: Path) -> int | None:
        try:
            return int(DeltaTable(str(path)).version())
        except TableNotFoundError:
            return None

    def schema(self, path: Path) -> pa.Schema:
        return pa.schema(DeltaTable(str(path)).schema().to_arrow())

    def partition_columns(self, path: Path) -> list[str]:
        return list(DeltaTable(str(path)).metadata().partition_columns)

    def add_timestamp_column(self, path: Path, name: str) -> None:
        with_commit_retries(
            lambda: DeltaTable(str(path)).alter.add_columns(
                Field(name, PrimitiveType("timestamp"), nullable=True)
            )
        )

    def append(self, path: Path, rows: pa.Table) -> None:
        with_commit_retries(lambda: write_deltalake(str(path), rows, mode="append"))

    def insert_new(self, path: Path, rows: pa.Table, match: str) -> int:
        return self._merge(path, rows, match, replace_when=None)

    def upsert(self, path: Path, rows: pa.Table, match: str, replace_when: str) -> int:
        return self._merge(path, rows, match, replace_when)

    def _merge(self, path: Path, rows: pa.Table, match: str, replace_when: str | None) -> int:
        """Insert what nothing matches; with replace_when, also replace where it holds."""
        if rows.num_rows == 0:
            return 0

        def merge() -> int:
            plan = DeltaTable(str(path)).merge(
                rows, predicate=match, source_alias="s", target_alias="t"
            )
            if replace_when is not None:
                plan = plan.when_matched_update_all(predicate=replace_when)
            metrics = plan.when_not_matched_insert_all().execute()
            inserted = int(metrics.get("num_target_rows_inserted", 0))
            return inserted + int(metrics.get("num_target_rows_updated", 0))

        return with_commit_retries(merge)

    def delete(self, path: Path, predicate: str) -> int:
        def delete() -> int:
            return int(DeltaTable(str(path)).delete(predicate).get("num_deleted_rows", 0))

        return with_commit_retries(delete)

    def read(self, path: Path, columns: Sequence[str] | None = None) -> pa.Table:
        wanted = list(columns) if columns is not None else None
        return DeltaTable(str(path)).to_pyarrow_table(columns=wanted)

    def files(self, path: Path, version: int | None = None) -> list[TableFile]:
        try:
            table = DeltaTable(str(path), version=version)
        except Exception as exc:  # that version's log is gone (or no table at all)
            raise LookupError(f"{path} has no version {version}: {exc}") from exc
        actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        partition_keys = [k for k in actions if k.startswith("partition.")]
        found = [
            TableFile(
                path=actions["path"][i],
                committed_ms=_millis(actions["modification_time"][i]),
                partition={
                    k.removeprefix("partition."): _text(actions[k][i]) for k in partition_keys
                },
            )
            for i in range(len(actions["path"]))
        ]
        return sorted(found, key=lambda f: (f.committed_ms, f.path))

    def read_file(self, path: Path, file: str, columns: Sequence[str] | None = None) -> pa.Table:
        return pq.read_table(path / file, columns=list(columns) if columns else None)

    def compact(self, path: Path, sort_by: Sequence[str], partition: tuple[str, str]) -> int:
        column, value = partition

        def sort() -> int:
            metrics = DeltaTable(str(path)).optimize.z_order(
                list(sort_by), partition_filters=[(column, "=", value)]
            )
            return int(metrics.get("numFilesRemoved", 0))

        return with_commit_retries(sort)

    def vacuum(self, path: Path, retention_hours: float) -> int:
        table = DeltaTable(str(path))
        hours = int(retention_hours)
        # A vacuum commits twice to the log even when it deletes nothing: ask first. It
        # names the files the log removed whether or not an earlier vacuum deleted them.
        named = table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=True)
        present = [name for name in named if (path / name).exists()]
        if not present:
            return 0
        table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False)
        return len(present)


def _millis(value: object) -> int:
    """A commit time as delta-rs reports it (a datetime, or milliseconds)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(str(value))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# The stateless Delta implementation, for callers not handed another: the archiver, the
# erasure and the replay are given theirs by the command that runs them.
DELTA_TABLES: Final[Tables] = DeltaTables()
