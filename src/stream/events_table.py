"""The Delta table of accepted events (`bronze/events`): partitioned by the day the
broker received each event, merged on (customer_id, event_id) within a dedupe window,
its closed days compacted and sorted by customer_id.

A flush's merge reads only the partitions of its window (the rows' days and the one
before), so its cost follows the traffic of those days, not the table's size. A
redelivered message carries the broker's timestamp it had the first time, so it lands
on the same day and the window always holds its first copy; a client's retry of an
accepted event (a new message, the same event_id) is caught when it comes within a day.
A table archived before partitioning keeps its layout and its whole-table merge.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from recsys.events import RECEIVED_AT, RECEIVED_DATE
from recsys.tables import DELTA_TABLES, Tables

log = logging.getLogger(__name__)

# Days before a flush's oldest day that its merge still reads for duplicates.
DEDUPE_DAYS = 1

EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("customer_id", pa.string()),
        ("article_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("price", pa.float64()),
        ("recommendation_id", pa.string()),
        ("schema_version", pa.int32()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        (RECEIVED_DATE, pa.date32()),
        (RECEIVED_AT, pa.timestamp("us", tz="UTC")),
    ]
)


def received_ms(message: Message) -> int:
    """The broker time of a message in milliseconds (the producer's, or the broker's where
    the topic logs append time); now where it has none. The archive keeps it as
    `received_at`, so the updater and a replay order a customer's events alike."""
    kind, millis = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or millis <= 0:
        return time.time_ns() // 1_000_000
    return int(millis)


def received_date(message: Message) -> date:
    """The UTC day of the message's broker time."""
    return datetime.fromtimestamp(received_ms(message) / 1000, tz=UTC).date()


def ensure_events_table(path: Path, tables: Tables = DELTA_TABLES) -> None:
    """Create the empty, partitioned table up front, so every later write is a merge; a
    table archived before `received_at` existed gets the column (its rows keep none)."""
    tables.ensure(path, EVENTS_SCHEMA, partition_by=[RECEIVED_DATE])
    if RECEIVED_AT not in tables.schema(path).names:
        tables.add_timestamp_column(path, RECEIVED_AT)


def is_partitioned(path: Path, tables: Tables = DELTA_TABLES) -> bool:
    return RECEIVED_DATE in tables.partition_columns(path)


def _with_receipt(rows: pa.Table) -> pa.Table:
    """Rows without a broker time (written by hand, or by an older archiver) get now, and
    rows without a received day the day of their broker time."""
    now = datetime.now(UTC)
    for name, kind in ((RECEIVED_AT, pa.timestamp("us", tz="UTC")), (RECEIVED_DATE, pa.date32())):
        if name not in rows.column_names:
            rows = rows.append_column(name, pa.nulls(rows.num_rows, kind))
    # Broker times are whole milliseconds; a finer time given by hand is truncated.
    at = pc.cast(rows.column(RECEIVED_AT), pa.timestamp("ms", tz="UTC"), safe=False)
    if at.null_count:
        at = pc.fill_null(at, pa.scalar(now, pa.timestamp("ms", tz="UTC")))
    rows = rows.set_column(rows.schema.get_field_index(RECEIVED_AT), RECEIVED_AT, at)
    days = rows.column(RECEIVED_DATE)
    if days.null_count:
        days = pc.coalesce(days, pc.cast(at, pa.date32()))
        rows = rows.set_column(rows.schema.get_field_index(RECEIVED_DATE), RECEIVED_DATE, days)
    return rows


def append_new(path: Path, rows: pa.Table, tables: Tables = DELTA_TABLES) -> int:
    """Insert the rows whose (customer_id, event_id) the table does not hold yet (within
    the dedupe window); return how many. Safe beside other archivers: a lost commit race retries."""
    if rows.num_rows == 0:
        return 0
    rows = _with_receipt(rows)
    source, predicate = rows, "t.event_id = s.event_id AND t.customer_id = s.customer_id"
    if is_partitioned(path, tables):
        oldest = pc.min(rows.column(RECEIVED_DATE)).as_py() - timedelta(days=DEDUPE_DAYS)
        predicate = f"t.{RECEIVED_DATE} >= '{oldest.isoformat()}' AND {predicate}"
    else:
        source = rows.drop_columns([RECEIVED_DATE])
    return tables.insert_new(path, source, predicate)


def compact_closed_days(
    path: Path, today: date | None = None, tables: Tables = DELTA_TABLES
) -> int:
    """Rewrite each day before today that has more than one file (a day's flushes leave
    one small file each) into few large files sorted by customer_id (each file's id range
    in its statistics, each row group's in the file: an erasure's DELETE reads and
    rewrites little of a day); return the files it replaced. Today's partition, where
    the merges write, is left alone, so compaction and archiving do not contend."""
    if not is_partitioned(path, tables):
        return 0
    day = (today or datetime.now(UTC).date()).isoformat()
    files = Counter(str(f.partition.get(RECEIVED_DATE)) for f in tables.files(path))
    closed = sorted(d for d, n in files.items() if d < day and n > 1)
    removed = 0
    for closed_day in closed:
        removed += tables.compact(path, ["customer_id"], (RECEIVED_DATE, closed_day))
    if removed:
        log.info("compacted %d files of %s before %s", removed, path.name, day)
    return removed
