"""`recsys bench archive`: one archiver flush against an events table that already holds
1M and 10M events, in the archiver's layout (partitioned by day, closed days compacted)
and, side by side, the same rows in one unpartitioned table (the layout before).

The table is filled directly (the broker is not the subject), at a fixed number of
events a day, so both sizes have the same traffic in a flush's dedupe window and differ
only in how much history the table holds. Each flush is 5,000 events, 5% of them
redelivered copies of the last day's: the merge must find and skip them.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from rich.table import Table

from recsys.events import RECEIVED_AT, RECEIVED_DATE
from stream.events_table import (
    EVENTS_SCHEMA,
    append_new,
    compact_closed_days,
    ensure_events_table,
)

FIRST_DAY = date(2026, 1, 1)
FILL_CHUNK = 500_000
FLUSH = 5_000
REDELIVERED = 0.05


@dataclass
class ArchiveRow:
    events: int
    days: int
    files_partitioned: int
    files_unpartitioned: int
    flush_partitioned_s: float
    flush_unpartitioned_s: float

    @property
    def ratio(self) -> float:
        return self.flush_unpartitioned_s / self.flush_partitioned_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unpartitioned_over_partitioned": round(self.ratio, 2)}


def _events(rng: np.random.Generator, n: int, first: int, days: np.ndarray[Any, Any]) -> pa.Table:
    ids = [f"bench-{first + i}-{r:x}" for i, r in enumerate(rng.integers(0, 1 << 48, n))]
    received = pa.array([FIRST_DAY + timedelta(days=int(d)) for d in days], pa.date32())
    stamps = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=int(d)) for d in days]
    return pa.table(
        {
            "event_id": ids,
            "event_type": ["purchase"] * n,
            "customer_id": [f"customer-{c}" for c in rng.integers(0, 1_000_000, n)],
            "article_id": [f"{a:010d}" for a in rng.integers(0, 105_542, n)],
            "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "price": rng.random(n),
            "recommendation_id": pa.nulls(n, pa.string()),
            "schema_version": pa.array(np.ones(n, dtype=np.int32)),
            "kafka_partition": pa.array(np.zeros(n, dtype=np.int32)),
            "kafka_offset": pa.array(np.arange(first, first + n, dtype=np.int64)),
            RECEIVED_DATE: received,
            RECEIVED_AT: pa.array(stamps, pa.timestamp("us", tz="UTC")),
        },
        schema=EVENTS_SCHEMA,
    )


def fill(folder: Path, events: int, per_day: int, seed: int) -> tuple[Path, Path, int]:
    """The same events into both layouts; the partitioned one's closed days compacted."""
    rng = np.random.default_rng(seed)
    partitioned, flat = folder / "partitioned", folder / "unpartitioned"
    for path in (partitioned, flat):
        shutil.rmtree(path, ignore_errors=True)
    ensure_events_table(partitioned)
    days = max(1, events // per_day)
    for first in range(0, events, FILL_CHUNK):
        n = min(FILL_CHUNK, events - first)
        chunk = _events(rng, n, first, np.arange(first, first + n) // per_day)
        write_deltalake(str(partitioned), chunk, mode="append")
        write_deltalake(str(flat), chunk.drop_columns([RECEIVED_DATE]), mode="append")
    compact_closed_days(partitioned, FIRST_DAY + timedelta(days=days - 1))
    return partitioned, flat, days


def _flush(
    path: Path, rng: np.random.Generator, day: int, first: int, last_day: list[tuple[str, str]]
) -> float:
    """One flush of new events, REDELIVERED of them copies of the last day's (an event is
    its (customer_id, event_id))."""
    rows = _events(rng, FLUSH, first, np.full(FLUSH, day))
    again = rng.choice(len(last_day), size=int(FLUSH * REDELIVERED), replace=False)
    ids = rows.column("event_id").to_pylist()
    customers = rows.column("customer_id").to_pylist()
    for slot, pick in enumerate(again):
        customers[slot], ids[slot] = last_day[int(pick)]
    rows = rows.set_column(0, "event_id", pa.array(ids))
    rows = rows.set_column(
        rows.schema.get_field_index("customer_id"), "customer_id", pa.array(customers)
    )
    started = time.perf_counter()
    inserted = append_new(path, rows)
    took = time.perf_counter() - started
    if inserted != FLUSH - len(again):
        raise RuntimeError(f"the merge inserted {inserted} of {FLUSH - len(again)} new events")
    return took


def measure(folder: Path, events: int, per_day: int, flushes: int, seed: int) -> ArchiveRow:
    partitioned, flat, days = fill(folder, events, per_day, seed)
    last_day = FIRST_DAY + timedelta(days=days - 1)
    held = (
        DeltaTable(str(partitioned))
        .to_pyarrow_table(
            columns=["customer_id", "event_id"], filters=[(RECEIVED_DATE, "=", last_day)]
        )
        .to_pydict()
    )
    last_ids = list(zip(held["customer_id"], held["event_id"], strict=True))
    times: dict[str, list[float]] = {"p": [], "u": []}
    rng = np.random.default_rng(seed + 1)
    for n in range(flushes):  # alternated, so a slow moment of the machine hits both
        first = events + n * FLUSH
        times["p"].append(_flush(partitioned, rng, days - 1, first, last_ids))
        times["u"].append(_flush(flat, rng, days - 1, first, last_ids))
    return ArchiveRow(
        events=events,
        days=days,
        files_partitioned=len(DeltaTable(str(partitioned)).file_uris()),
        files_unpartitioned=len(DeltaTable(str(flat)).file_uris()),
        flush_partitioned_s=round(statistics.median(times["p"]), 3),
        flush_unpartitioned_s=round(statistics.median(times["u"]), 3),
    )


def run(work_dir: Path, sizes: list[int], per_day: int, flushes: int) -> list[ArchiveRow]:
    rows = []
    for events in sizes:
        folder = work_dir / f"archive-{events}"
        try:
            rows.append(measure(folder, events, per_day, flushes, seed=events % 1_000_003))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(rows: list[ArchiveRow], per_day: int) -> Table:
    out = Table(title=f"archive: one flush of {FLUSH:,} events ({REDELIVERED:.0%} redelivered), "
                      f"{per_day:,} events a day, median seconds")  # fmt: skip
    for name in ("events in the table", "days", "flush, partitioned by day",
                 "flush, one unpartitioned table", "unpartitioned / partitioned",
                 "files, partitioned / unpartitioned"):  # fmt: skip
        out.add_column(name, justify="right")
    for r in rows:
        out.add_row(f"{r.events:,}", str(r.days), f"{r.flush_partitioned_s:.3f}",
                    f"{r.flush_unpartitioned_s:.3f}", f"{r.ratio:.1f}x",
                    f"{r.files_partitioned} / {r.files_unpartitioned}")  # fmt: skip
    return out
