"""`recsys archiver`: accepted events into the Delta `events` table, each exactly once,
and the catalog topic's articles and availabilities into the Delta `items` and
`availability` tables, one row per article each (the newest).

Offsets are committed only after the Delta commits, and rows are merged on event_id (on
article_id, newest wins), so a crash between the two redelivers messages that the merge
then skips. Several archivers in one group share the partitions and the tables: a
rebalance writes and commits what was read before the partitions go, and a Delta commit
that lost a race with another archiver's is merged again on a fresh read (recsys.tables),
so the merge still sees the other's rows. The events table is partitioned by day
(stream.events_table); every RECSYS_ARCHIVER_COMPACT_INTERVAL_S the archiver compacts its
closed days.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from pydantic import ValidationError

from observability.archiver_metrics import ArchiverMetrics
from recsys.erasure import (
    ErasureCache,
    customer_hash,
    delete_received_before,
    drop_erased,
    erased_rows,
)
from recsys.events import RECEIVED_AT, RECEIVED_DATE, Event
from recsys.settings import Settings
from recsys.tables import DELTA_TABLES, Tables
from stream.dead_letters import dead_letter_headers
from stream.events_table import (
    EVENTS_SCHEMA,
    append_new,
    compact_closed_days,
    ensure_events_table,
    received_date,
    received_ms,
)
from stream.items_table import (
    AVAILABILITY_SCHEMA,
    ITEMS_SCHEMA,
    Refuse,
    availability_rows,
    item_rows,
    merge_newest,
)
from stream.offsets import commit_processed

log = logging.getLogger(__name__)


@dataclass
class FlushOutcome:
    received: int = 0
    written: int = 0
    invalid: int = 0


def to_rows(
    messages: Sequence[Message], refuse: Callable[[Message, str], None] | None = None
) -> tuple[pa.Table, int]:
    """Valid events as rows (the first copy of each (customer_id, event_id): an event's
    identity), and how many were invalid. A row Arrow cannot hold in the table's schema
    (an event the rule lets through that the table cannot store) goes to `refuse` with
    the reason, so one message cannot hold the rest back by failing every flush."""
    rows: dict[tuple[str, str], tuple[Message, dict[str, object]]] = {}
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
            (event.customer_id, event.event_id),
            (message, {
                **event.model_dump(),
                "kafka_partition": message.partition(),
                "kafka_offset": message.offset(),
                RECEIVED_DATE: received_date(message),
                RECEIVED_AT: datetime.fromtimestamp(received_ms(message) / 1000, tz=UTC),
            }),
        )  # fmt: skip
    try:
        return pa.Table.from_pylist([r for _, r in rows.values()], schema=EVENTS_SCHEMA), invalid
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        if refuse is None:
            raise
    kept = []
    for message, row in rows.values():
        try:
            kept.append(pa.Table.from_pylist([row], schema=EVENTS_SCHEMA))
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            refuse(message, f"not archived: {type(exc).__name__}: {exc}")
    return (pa.concat_tables(kept) if kept else EVENTS_SCHEMA.empty_table()), invalid


# A failed flush (the lake unwritable, a commit that kept losing, the broker refusing the
# commit) is tried again after this, doubling up to MAX_RETRY_S; its messages wait,
# uncommitted, and the consumer keeps polling so the group keeps its partitions.
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 30.0
PENDING_BATCHES = 10


@dataclass(frozen=True)
class Sink:
    """Where one topic's messages go: rows from a batch of them, and the table's merge."""

    path: Path
    # The rows of a batch of messages, and how many were invalid; a message the sink
    # cannot take goes to the refuse callable with its reason.
    rows: Callable[[Sequence[Message], Refuse | None], tuple[pa.Table, int]]
    merge: Callable[[Path, pa.Table], int]


class Archiver:
    """Consumes the events and the catalog topics (one subscription, one commit)."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        dlq_producer: Producer | None = None,
        metrics: ArchiverMetrics | None = None,
        tables: Tables = DELTA_TABLES,
    ) -> None:
        """dlq_producer takes the rows the table cannot hold (without one, such a flush
        fails and is retried)."""
        self.settings = settings
        self.tables = tables
        self.metrics = metrics or ArchiverMetrics()
        self.consumer = consumer
        self.dlq = dlq_producer
        self._dead_letters = 0  # of the flush being written
        self._dlq_failed: list[str] = []
        # Read and not yet archived: written by a flush, or before a rebalance takes
        # their partitions (partitions_revoked).
        self._pending: list[Message] = []
        ensure_events_table(settings.events_table, tables)
        self.erasures = ErasureCache(settings.lake_dir, tables)
        self._erasures_read: int | None = None
        tables.ensure(settings.items_table, ITEMS_SCHEMA)
        tables.ensure(settings.availability_table, AVAILABILITY_SCHEMA)
        self.sinks = {
            settings.events_topic: [
                Sink(settings.events_table, self._event_rows, self._append_events)
            ],
            settings.catalog_topic: [
                Sink(settings.items_table, item_rows, self._merge_newest),
                Sink(settings.availability_table, availability_rows, self._merge_newest),
            ],
        }

    def _event_rows(
        self, messages: Sequence[Message], refuse: Refuse | None = None
    ) -> tuple[pa.Table, int]:
        """The events as rows, less those of erased customers received before their
        erasure (a late or redelivered message must not put them back in the table)."""
        # An invalid event is the updater's to dead-letter: only what it applies and the
        # table cannot hold is the archiver's.
        rows, invalid = to_rows(messages, refuse)
        erased = self.erasures.current()
        self._erasures_read = self.erasures.version
        if erased.empty or rows.num_rows == 0:
            return rows, invalid
        frame = rows.to_pandas()
        kept = drop_erased(frame, erased, RECEIVED_AT)
        if len(kept) == len(frame):
            return rows, invalid
        return pa.Table.from_pandas(kept, schema=EVENTS_SCHEMA, preserve_index=False), invalid

    @property
    def _refuse(self) -> Refuse | None:
        return self._dead_letter if self.dlq is not None else None

    def _dead_letter(self, message: Message, reason: str) -> None:
        assert self.dlq is not None
        self.dlq.produce(
            self.settings.dlq_topic,
            value=message.value() or b"",
            key=message.key(),
            headers=dead_letter_headers(reason, message.topic() or self.settings.events_topic),
            on_delivery=lambda err, _m: self._dlq_failed.append(str(err)) if err else None,
        )
        self._dead_letters += 1
        self.metrics.dead_lettered.inc()
        log.warning("dead-lettered a message from partition %s: %s", message.partition(), reason)

    def _settle_dead_letters(self) -> None:
        """The flush's dead letters acknowledged by the broker before its commit (else the
        flush fails, is retried, and they are produced again)."""
        if self.dlq is None or not self._dead_letters:
            return
        left = self.dlq.flush(self.settings.kafka_produce_timeout_s + 1.0)
        failed, self._dlq_failed, self._dead_letters = self._dlq_failed, [], 0
        if left or failed:
            raise RuntimeError(f"dead letters not acknowledged by the broker: {failed or left}")

    def _append_events(self, path: Path, rows: pa.Table) -> int:
        """Append the new events; where a customer was erased after `_event_rows` read
        the erasures (the erasure's DELETE ran before this append), delete their rows
        received before it again, so none outlives an erasure that raced the flush."""
        written = append_new(path, rows, self.tables)
        erased = self.erasures.current()
        if self.erasures.version == self._erasures_read or rows.num_rows == 0:
            return written
        late = erased_rows(rows.select(["customer_id", RECEIVED_AT]).to_pandas(), erased,
                           RECEIVED_AT)  # fmt: skip
        for customer in sorted(set(late["customer_id"])):
            when = erased.loc[erased["customer_hash"] == customer_hash(customer), "erased_at"]
            removed = delete_received_before(path, customer, when.max().to_pydatetime(),
                                             self.tables)  # fmt: skip
            log.info("removed %d events of a customer erased during a flush", removed)
        return written

    def _merge_newest(self, path: Path, rows: pa.Table) -> int:
        return merge_newest(path, rows, self.tables)

    @staticmethod
    def topics(settings: Settings) -> list[str]:
        return [settings.events_topic, settings.catalog_topic]

    def compact(self) -> None:
        """The events table's closed days into few files, and the files replaced more than
        RECSYS_LAKE_RETENTION_HOURS ago deleted; a failure waits for the next turn (this
        is housekeeping, never a reason to stop archiving)."""
        try:
            compact_closed_days(self.settings.events_table, tables=self.tables)
            self.tables.vacuum(self.settings.events_table, self.settings.lake_retention_hours)
        except Exception:
            self.metrics.compactions.labels("failed").inc()
            log.warning("compaction of the events table failed; trying again later",
                        exc_info=True)  # fmt: skip
        else:
            self.metrics.compactions.labels("done").inc()

    def partitions_revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group takes partitions away (another archiver joined or left, or this one
        stops): what was read is written and committed before they go, so their next
        owner does not read it again (on_revoke). Where the lake refuses now, nothing is
        committed and the next owner archives it."""
        if not self._pending:
            return
        try:
            self.flush(self._pending)
        except Exception as exc:  # a revoke must not stop the archiver
            self.metrics.flush_failures.inc()
            log.warning(
                "archiving %d messages before a rebalance failed (%s); their partitions' "
                "next owners archive them", len(self._pending), exc,
            )  # fmt: skip
            self._drop(partitions)
        else:
            self._pending = []

    def partitions_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The partitions went without a revoke (this archiver missed its session): their
        new owner archives what was read of them (on_lost)."""
        self._drop(partitions)
        log.warning("lost %d partitions to the group without a revoke", len(partitions))

    def _drop(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in gone]

    def run(self, stop: threading.Event) -> None:
        self._pending = []
        oldest = time.monotonic()
        compacted = time.monotonic()
        retry_at, delay = 0.0, FIRST_RETRY_S
        while not stop.is_set():
            if time.monotonic() - compacted >= self.settings.archiver_compact_interval_s:
                self.compact()
                compacted = time.monotonic()
            if len(self._pending) >= PENDING_BATCHES * self.settings.archiver_batch_size:
                stop.wait(0.1)  # a flush is failing: hold what is read, read no more
                batch = []
            else:
                # A rebalance runs partitions_revoked in here, which may empty _pending.
                batch = self.consumer.consume(self.settings.archiver_batch_size, 0.1)
            if batch and not self._pending:
                oldest = time.monotonic()
            self._pending.extend(batch)
            full = len(self._pending) >= self.settings.archiver_batch_size
            due = time.monotonic() - oldest >= self.settings.archiver_flush_interval_s
            if self._pending and (full or due) and time.monotonic() >= retry_at:
                try:
                    self.flush(self._pending)
                except Exception as exc:  # the lake or the broker: nothing is committed
                    self.metrics.flush_failures.inc()
                    log.warning("archiving %d messages failed (%s); trying again in %.1f s",
                                len(self._pending), exc, delay)  # fmt: skip
                    retry_at, delay = time.monotonic() + delay, min(delay * 2, MAX_RETRY_S)
                    continue
                self._pending, delay = [], FIRST_RETRY_S
        if self._pending:
            self.flush(self._pending)
            self._pending = []

    def flush(self, messages: Sequence[Message]) -> FlushOutcome:
        with self.metrics.flush_seconds.time():
            outcome = self._flush(messages)
        self.metrics.last_flush.set_to_current_time()
        return outcome

    def _flush(self, messages: Sequence[Message]) -> FlushOutcome:
        by_topic: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            by_topic[message.topic() or ""].append(message)
        outcome = FlushOutcome(received=len(messages))
        for topic, own in by_topic.items():
            for sink in self.sinks.get(topic, []):
                rows, invalid = sink.rows(own, self._refuse)
                written = sink.merge(sink.path, rows)
                outcome.written += written
                outcome.invalid += invalid
                self.metrics.rows_written.labels(sink.path.name).inc(written)
                self.metrics.messages_invalid.labels(topic).inc(invalid)
                if written:
                    already = rows.num_rows - written
                    log.info(
                        "archived %d rows of %s to %s (%d already there)",
                        written,
                        topic,
                        sink.path.name,
                        already,
                    )
        self._settle_dead_letters()
        commit_processed(self.consumer, messages)
        return outcome
