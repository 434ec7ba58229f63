"""Delta tables the stream and the core write with delta-rs: created empty up front,
and a commit that lost a race with another writer (the archiver's merge, an erasure's
delete, a compaction) tried again, a few times, with a growing pause."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

T = TypeVar("T")
COMMIT_RETRIES = 5


def ensure_table(path: Path, schema: pa.Schema, partition_by: Sequence[str] = ()) -> None:
    """Create the empty table up front (a table already there is left as it is), so
    every later write is a merge."""
    try:
        DeltaTable(str(path))
    except TableNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            str(path), schema.empty_table(), mode="ignore", partition_by=list(partition_by) or None
        )


def with_commit_retries(action: Callable[[], T], retries: int = COMMIT_RETRIES) -> T:
    for attempt in range(retries):
        try:
            return action()
        except CommitFailedError:
            if attempt == retries - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def vacuum(path: Path, retention_hours: float) -> int:
    """Delete the files no table version newer than the retention needs (those replaced
    by compactions, overwrites and erasures' deletes); return how many. Time travel, and
    a replay's exact view of what a model saw, last until then."""
    table = DeltaTable(str(path))
    hours = int(retention_hours)
    # A vacuum commits twice to the log even when it deletes nothing: ask first.
    if not table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=True):
        return 0
    deleted = table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False)
    return len(deleted)
