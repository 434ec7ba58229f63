"""Forgetting a customer on request: their vectors, history and profile in Redis, their
rows in every Delta table, their row in each kept version's factors file, and an erasure
record so that neither the next batch run nor a promotion replay nor a redelivered Kafka
message brings them back.

The record (the SHA-256 of the customer id, never the id itself, and the time of
erasure) is kept twice: in the Delta table `<lake>/bronze/erasures` (durable, read by the
batch and the replay) and in the Redis hash `rs:erased` (read by the updater and the
archiver). Events of the customer stamped after the erasure are a returning customer and
count again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.audit import LOCAL, audited
from recsys.events import RECEIVED_AT
from recsys.ids import is_valid_id
from recsys.model_layout import FACTORS, version_dir
from recsys.settings import Settings
from recsys.tables import DELTA_TABLES, Tables
from recsys.user_store import UserStore

ERASURES_SCHEMA = pa.schema(
    [("customer_hash", pa.string()), ("erased_at", pa.timestamp("us", tz="UTC"))]
)


def customer_hash(customer_id: str) -> str:
    """What the erasure record keeps of a customer: the same hash Spark's sha2(id, 256) gives."""
    return hashlib.sha256(customer_id.encode()).hexdigest()


def erasures_table(lake_dir: Path) -> Path:
    return lake_dir / "bronze" / "erasures"


@dataclass
class ErasureReport:
    customer_id: str
    erased_at: datetime
    redis_keys: int = 0
    delta_rows: dict[str, int] = field(default_factory=dict)  # table (layer/name) -> rows
    factor_rows: dict[str, int] = field(default_factory=dict)  # model version -> rows
    # Files of earlier table versions deleted from disk, older than the retention.
    vacuumed_files: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # redis, delta, vacuum, factors


def erase_customer(
    settings: Settings,
    store: UserStore,
    customer_id: str,
    now: datetime | None = None,
    tables: Tables = DELTA_TABLES,
    *,
    actor: str = LOCAL,
) -> ErasureReport:
    """Remove everything stored about the customer, then record the erasure. Idempotent:
    erasing twice removes nothing more and moves the recorded time forward. The audit
    line names the actor (an API key's name, or `local`) and counts what was removed;
    it never holds the customer id nor its hash."""
    if not is_valid_id(customer_id):
        raise ValueError(f"not a valid customer id: {customer_id[:64]!r}")
    with audited("erase", actor) as entry:
        report = _erase(settings, store, customer_id, now, tables)
        entry.add(
            redis_keys=report.redis_keys,
            delta_rows=sum(report.delta_rows.values()),
            factor_rows=sum(report.factor_rows.values()),
            vacuumed_files=report.vacuumed_files,
        )
    return report


def _erase(
    settings: Settings,
    store: UserStore,
    customer_id: str,
    now: datetime | None,
    tables: Tables,
) -> ErasureReport:
    report = ErasureReport(customer_id, now or datetime.now(UTC))
    # The record first: from here on the updater drops the customer's older events, so
    # nothing written while the rest runs can survive it.
    record_erasure(settings, store, customer_id, report.erased_at, tables)
    started = time.perf_counter()
    report.redis_keys = store.erase_customer(customer_id, _versions(settings, store))
    report.seconds["redis"] = _since(started)
    started = time.perf_counter()
    for name, path in _customer_tables(settings.lake_dir, tables):
        # The id is of the safe alphabet (is_valid_id): no quote can end the literal.
        deleted = tables.delete(path, f"customer_id = '{customer_id}'")
        if deleted:
            report.delta_rows[name] = deleted
    report.seconds["delta"] = _since(started)
    started = time.perf_counter()
    # Every customer table, not only those deleted from now: a batch's overwrite leaves
    # the customer's rows in files only older versions name, until a vacuum.
    for _, path in _customer_tables(settings.lake_dir, tables):
        report.vacuumed_files += tables.vacuum(path, settings.lake_retention_hours)
    report.seconds["vacuum"] = _since(started)
    started = time.perf_counter()
    for version, path in _factor_files(settings.models_dir):
        removed = _drop_user_factors(path, customer_id)
        if removed:
            report.factor_rows[version] = removed
    report.seconds["factors"] = _since(started)
    return report


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def record_erasure(
    settings: Settings,
    store: UserStore,
    customer_id: str,
    erased_at: datetime,
    tables: Tables = DELTA_TABLES,
) -> None:
    hashed = customer_hash(customer_id)
    store.record_erasure(hashed, erased_at.timestamp())
    path = erasures_table(settings.lake_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = pa.table({"customer_hash": [hashed], "erased_at": [erased_at]}, schema=ERASURES_SCHEMA)
    tables.ensure(path, ERASURES_SCHEMA)
    tables.append(path, row)


def _no_erasures() -> pd.DataFrame:
    return pd.DataFrame({"customer_hash": pd.Series(dtype=object), "erased_at": pd.Series(
        dtype="datetime64[us, UTC]")})  # fmt: skip


def _latest(rows: pa.Table) -> pd.DataFrame:
    frame = rows.to_pandas()
    latest: pd.DataFrame = frame.groupby("customer_hash")["erased_at"].max().reset_index()
    return latest


def erased_before(lake_dir: Path, tables: Tables = DELTA_TABLES) -> pd.DataFrame:
    """Every erasure: customer_hash and the latest erased_at (UTC), one row per customer."""
    return ErasureCache(lake_dir, tables).current()


class ErasureCache:
    """`erased_before` for a consumer that asks at every flush: the table's data is read
    again only when its version moved (a version check reads the log, not the rows), so
    a flush costs the same however many customers were erased."""

    def __init__(self, lake_dir: Path, tables: Tables = DELTA_TABLES) -> None:
        self.lake_dir = lake_dir
        self.tables = tables
        self._version: int | None = None
        self._frame = _no_erasures()

    @property
    def version(self) -> int | None:
        """The erasures table's version `current` last read (None: no table yet)."""
        return self._version

    def current(self) -> pd.DataFrame:
        path = erasures_table(self.lake_dir)
        version = self.tables.version(path)
        if version is not None and version != self._version:
            self._frame, self._version = _latest(self.tables.read(path)), version
        return self._frame


def drop_erased(frame: pd.DataFrame, erased: pd.DataFrame, ts_column: str) -> pd.DataFrame:
    """The rows of `frame` not of an erased customer at or before their erasure."""
    if erased.empty or frame.empty:
        return frame
    when = dict(zip(erased["customer_hash"], erased["erased_at"], strict=True))
    # Each row's customer's erasure time (NaT: never erased).
    cutoff = pd.to_datetime(
        frame["customer_id"].astype(str).map(lambda c: when.get(customer_hash(c))), utc=True
    )
    keep = cutoff.isna() | (pd.to_datetime(frame[ts_column], utc=True) > cutoff)
    return frame[keep.to_numpy()]


def erased_rows(frame: pd.DataFrame, erased: pd.DataFrame, ts_column: str) -> pd.DataFrame:
    """The rows of `frame` that `drop_erased` drops."""
    return frame.drop(drop_erased(frame, erased, ts_column).index)


def delete_received_before(
    table: Path, customer_id: str, erased_at: datetime, tables: Tables = DELTA_TABLES
) -> int:
    """Delete the customer's archived events received at or before their erasure (rows
    a writer appended while the erasure ran); return how many."""
    if not is_valid_id(customer_id):
        raise ValueError(f"not a valid customer id: {customer_id[:64]!r}")
    at = erased_at.astimezone(UTC).isoformat()
    predicate = f"customer_id = '{customer_id}' AND {RECEIVED_AT} <= '{at}'"
    return tables.delete(table, predicate)


def erased_at(store: UserStore, customer_ids: list[str]) -> dict[str, float]:
    """Of these customers, those erased and when (unix seconds): one round trip."""
    by_hash = {customer_hash(c): c for c in customer_ids}
    return {by_hash[h]: at for h, at in store.erased_at(list(by_hash)).items()}


def _versions(settings: Settings, store: UserStore) -> set[str]:
    """Every model version that may hold keys: those kept on disk and those the store
    points at (live, candidates, rollback history)."""
    found = set()
    if settings.models_dir.is_dir():
        found = {p.name for p in settings.models_dir.iterdir() if p.is_dir()}
    return found | store.pointers().named()


def _customer_tables(lake_dir: Path, tables: Tables) -> Iterator[tuple[str, Path]]:
    """Every table of the lake with a customer_id column (but the erasure record)."""
    for layer in ("bronze", "silver", "gold"):
        folder = lake_dir / layer
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            if path.name == "erasures" or not tables.exists(path):
                continue
            if "customer_id" in tables.schema(path).names:
                yield f"{layer}.{path.name}", path


def _factor_files(models_dir: Path) -> Iterator[tuple[str, Path]]:
    if not models_dir.is_dir():
        return
    for folder in sorted(models_dir.iterdir()):
        path = version_dir(models_dir, folder.name) / FACTORS
        if path.is_file():
            yield folder.name, path


def _drop_user_factors(path: Path, customer_id: str) -> int:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    keep = arrays["user_ids"] != customer_id
    removed = int((~keep).sum())
    if removed:
        arrays["user_ids"] = arrays["user_ids"][keep]
        arrays["user_factors"] = arrays["user_factors"][keep]
        partial = path.with_name(f".{path.stem}.erasing.npz")
        np.savez(partial, **arrays)
        partial.replace(path)
    return removed
