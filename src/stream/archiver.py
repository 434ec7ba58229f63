"""`recsys archiver`: accepted events into the Delta `events` table, each exactly once.

Offsets are committed only after the Delta commit, and rows are merged on event_id, so
a crash between the two redelivers events that the merge then skips.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from confluent_kafka import Consumer, Message
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError
from pydantic import ValidationError

from recsys.events import Event
from recsys.settings import Settings
from stream.offsets import commit_processed

log = logging.getLogger(__name__)

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
    ]
)


@dataclass
class FlushOutcome:
    received: int = 0
    written: int = 0
    invalid: int = 0


def to_rows(messages: Sequence[Message]) -> tuple[pa.Table, int]:
    """Valid events as rows (first copy of each event_id), and how many were invalid."""
    rows: dict[str, dict[str, object]] = {}
    invalid = 0
    for message in messages:
        if message.error() is not None:
            continue
        try:
            event = Event.from_bytes(message.value() or b"")
        except ValidationError:
            invalid += 1  # the updater dead-letters it with the reason
            continue
        rows.setdefault(
            event.event_id,
            {
                **event.model_dump(),
                "kafka_partition": message.partition(),
                "kafka_offset": message.offset(),
            },
        )
    table = pa.Table.from_pylist(list(rows.values()), schema=EVENTS_SCHEMA)
    return table, invalid


def ensure_events_table(path: Path) -> None:
    """Create the empty table up front, so every later write is a merge on event_id."""
    try:
        DeltaTable(str(path))
    except TableNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(str(path), EVENTS_SCHEMA.empty_table(), mode="ignore")


def append_new(path: Path, rows: pa.Table) -> int:
    """Insert the rows whose event_id the table does not hold yet; return how many."""
    if rows.num_rows == 0:
        return 0
    table = DeltaTable(str(path))
    metrics = (
        table.merge(rows, predicate="t.event_id = s.event_id", source_alias="s", target_alias="t")
        .when_not_matched_insert_all()
        .execute()
    )
    inserted: int = metrics.get("num_target_rows_inserted", 0)
    return inserted


class Archiver:
    def __init__(self, settings: Settings, consumer: Consumer) -> None:
        self.settings = settings
        self.consumer = consumer
        self.path = settings.events_table
        ensure_events_table(self.path)

    def run(self, stop: threading.Event) -> None:
        pending: list[Message] = []
        oldest = time.monotonic()
        while not stop.is_set():
            batch = self.consumer.consume(self.settings.archiver_batch_size, 0.1)
            if batch and not pending:
                oldest = time.monotonic()
            pending.extend(batch)
            full = len(pending) >= self.settings.archiver_batch_size
            due = time.monotonic() - oldest >= self.settings.archiver_flush_interval_s
            if pending and (full or due):
                self.flush(pending)
                pending = []
        if pending:
            self.flush(pending)

    def flush(self, messages: Sequence[Message]) -> FlushOutcome:
        rows, invalid = to_rows(messages)
        written = append_new(self.path, rows)
        commit_processed(self.consumer, messages)
        if written:
            log.info("archived %d events (%d already there)", written, rows.num_rows - written)
        return FlushOutcome(received=len(messages), written=written, invalid=invalid)
