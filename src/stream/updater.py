"""`recsys updater`: events (purchases, and views, clicks and add-to-carts by their
weight) move the customer's vector in Redis, once each.

At-least-once from Kafka, exactly-once in effect: each event is applied by one atomic
Redis step that also remembers it, by its broker time and id (recsys/apply.py), and
offsets are committed only after that write (again, and waited for, when the group takes
a partition away: several updaters share the partitions, docs/events.md).

Each event continues the trace its message carries (the API's request): a consumer
span per event, with the batch's Redis write as its child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import redis
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from opentelemetry.propagate import extract
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer, set_span_in_context
from pydantic import ValidationError
from redis.exceptions import ResponseError

from observability.updater_metrics import UpdaterMetrics
from recsys.apply import Target
from recsys.erasure import erased_at
from recsys.events import Event, validation_reason
from recsys.experiments.definitions import experiments_from_settings
from recsys.experiments.ledger import Ledger, Purchase
from recsys.settings import Settings
from recsys.stores import SyncRedis
from recsys.user_store import RedisUserStore
from stream.dead_letters import dead_letter_headers
from stream.events_table import received_ms
from stream.offsets import FinishedOffsets

log = logging.getLogger(__name__)

# The consumer lag gauge asks the broker for watermarks at most this often.
LAG_EVERY_S = 1.0
# How long one wait for the next message lasts (the stop flag is checked between).
WAIT_S = 0.1


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    versions: list[str] = field(default_factory=list)


class DeadLetterError(RuntimeError):
    """The broker did not take the batch's dead letters: the batch is not committed."""


class Updater:
    def __init__(
        self,
        settings: Settings,
        client: SyncRedis,
        consumer: Consumer,
        dlq_producer: Producer,
        *,
        new_dlq_producer: Callable[[], Producer] | None = None,
        metrics: UpdaterMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """new_dlq_producer replaces a dead-letter producer whose writes were not
        acknowledged (one stuck on a broker that restarted without its state)."""
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.dlq = dlq_producer
        self._new_dlq = new_dlq_producer
        self._dlq_failed = 0  # dead letters of this batch the broker refused
        self.users = RedisUserStore(client)
        self.applier = self.users.applier(settings)
        self.ledger = Ledger.from_settings(settings)
        # Purchases are credited to experiment lists only where experiments are defined
        # (the API's RECSYS_EXPERIMENTS_FILE): a round trip of scripts per batch otherwise
        # cost a third of the updater's throughput for nothing.
        self.attributing = bool(experiments_from_settings(settings).experiments)
        self.metrics = metrics or UpdaterMetrics()
        self.tracer = tracer or NoOpTracer()
        self._tracing = not isinstance(self.tracer, NoOpTracer)
        self._lag_checked = 0.0
        self.offsets = FinishedOffsets()

    def partitions_revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group takes partitions away (another updater joined or left, or this one
        stops): what was applied from them is committed before they go (on_revoke)."""
        self.offsets.revoked(consumer, partitions)

    def partitions_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The partitions went without a revoke (this updater missed its session): their
        new owner has them, a commit would be refused, and what it applies again is
        skipped as applied (on_lost)."""
        self.offsets.forget(partitions)
        log.warning("lost %d partitions to the group without a revoke", len(partitions))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            # Wait for one message, then take whatever else is already fetched: a quiet
            # stream applies each event at once, a busy one in large batches.
            messages = self.consumer.consume(1, WAIT_S)
            if messages:
                messages += self.consumer.consume(self.settings.updater_batch_size - 1, 0)
                self._process_until_done(messages, stop)
            if time.monotonic() - self._lag_checked >= LAG_EVERY_S:
                self._update_lag()

    def _update_lag(self) -> None:
        """Per assigned partition: the broker's high watermark less our position."""
        self._lag_checked = time.monotonic()
        try:
            assigned = self.consumer.assignment()
            self.metrics.lag.clear()  # partitions given away in a rebalance drop out
            for tp in self.consumer.position(assigned) if assigned else []:
                # Cached: the high watermark comes with every fetch response, so reading
                # it costs no broker round trip inside the consume loop.
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), cached=True
                )
                lag = max(0, high - tp.offset) if tp.offset >= 0 else high
                self.metrics.lag.labels(str(tp.partition)).set(lag)
        except Exception as exc:  # a metric must never stop the updater
            log.debug("could not read the consumer lag: %s", exc)

    def _process_until_done(self, messages: Sequence[Message], stop: threading.Event) -> None:
        """Retry a batch on Redis errors, or dead letters the broker did not take, with
        backoff; its offsets wait until it succeeds (applying again changes nothing)."""
        delay = 0.1
        while True:
            try:
                self.process(messages)
                return
            except (redis.RedisError, DeadLetterError) as exc:
                if stop.is_set():
                    return  # not committed: redelivered to whoever consumes next
                if isinstance(exc, redis.RedisError):
                    self.metrics.redis_retries.inc()
                    log.warning("redis unavailable (%s); retrying in %.1f s", exc, delay)
                else:
                    log.warning("%s; retrying in %.1f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def process(self, messages: Sequence[Message]) -> BatchOutcome:
        """Apply a batch and commit it. A message that is not an event, or that Redis
        refuses as a command (not as an outage), goes to the dead-letter topic with its
        reason and the rest go on; an outage raises, and nothing is committed."""
        outcome = BatchOutcome()
        self._dlq_failed = 0
        received: list[tuple[Event, Message]] = []
        for message in messages:
            if message.error() is not None:
                continue
            event = self._parse_or_dead_letter(message)
            if event is None:
                outcome.dead_lettered += 1
            else:
                received.append((event, message))
        received = self._without_erased(received)
        if received:
            started = time.time_ns()
            targets = self.applier.active_versions()
            outcome.versions = [t.version for t in targets]
            applied_anywhere = [False] * len(received)
            stamps = [received_ms(message) for _, message in received]
            refused: set[int] = set()
            for target in targets:
                flags = self._apply_or_dead_letter(target, received, stamps, refused)
                applied_anywhere = [a or f for a, f in zip(applied_anywhere, flags, strict=True)]
                outcome.applied += sum(flags)
                outcome.duplicates += len(flags) - len(refused) - sum(flags)
            outcome.dead_lettered += len(refused)
            received = [r for n, r in enumerate(received) if n not in refused]
            applied_anywhere = [a for n, a in enumerate(applied_anywhere) if n not in refused]
            events = [event for event, _ in received]
            # Credit each purchase to the experiment list that showed it (idempotent per
            # event id, so a redelivered batch credits nothing twice); weaker signals are
            # not conversions.
            if self.attributing:
                self._attribute([e for e in events if e.is_purchase])
            self._observe(received, applied_anywhere, outcome, started)
        self._settle_dead_letters(outcome.dead_lettered)
        # Asynchronous: the next batch need not wait for the broker. A commit that fails
        # only means redelivery, and what was applied is skipped; a revoke commits the
        # finished offsets synchronously (partitions_revoked).
        self.offsets.commit(self.consumer, messages, asynchronous=True)
        return outcome

    def _attribute(self, purchases: list[Event]) -> None:
        """Credit purchases to experiments; Redis refusing one customer's ledger (a key of
        another type) loses that batch's credits, logged, and never stops the updater."""
        try:
            self.ledger.attribute_all_sync(
                self.client,
                [Purchase(e.event_id, e.customer_id, e.article_id, e.recommendation_id)
                 for e in purchases],
            )  # fmt: skip
        except ResponseError as exc:
            if is_outage(exc):
                raise
            log.warning("experiment attribution refused by Redis for a batch: %s", exc)

    def _settle_dead_letters(self, count: int) -> None:
        """Wait for the broker to take the batch's dead letters; the batch is committed
        only once it has (else the dead-letter producer is replaced and the batch goes
        again: what was applied is skipped)."""
        if not count:
            return
        left = self.dlq.flush(self.settings.kafka_produce_timeout_s + 1.0) + self._dlq_failed
        if left:
            if self._new_dlq is not None:
                self.dlq.purge()
                self.dlq = self._new_dlq()
            raise DeadLetterError(f"{left} dead letters not acknowledged by the broker")
        self.metrics.dead_lettered.inc(count)
        self.metrics.processed.labels("dead_lettered").inc(count)

    def _apply_or_dead_letter(
        self,
        target: Target,
        received: list[tuple[Event, Message]],
        stamps: list[int],
        refused: set[int],
    ) -> list[bool]:
        """Per event, whether it was applied to target now. Events in `refused` are not
        applied; one that Redis refuses as a command, or whose arithmetic fails, is
        dead-lettered and added to it. An outage raises."""
        kept = [n for n in range(len(received)) if n not in refused]
        events = [received[n][0] for n in kept]
        kept_stamps = [stamps[n] for n in kept]
        flags = [False] * len(received)
        try:
            applied = self.applier.apply_each(target, events, kept_stamps)
            for n, flag in zip(kept, applied, strict=True):
                flags[n] = flag
            return flags
        except (ResponseError, ArithmeticError, ValueError) as exc:
            if is_outage(exc):
                raise
        # One event's fault: each alone (what the batch applied is skipped as applied).
        for n, event, stamp in zip(kept, events, kept_stamps, strict=True):
            try:
                flags[n] = self.applier.apply_each(target, [event], [stamp])[0]
            except (ResponseError, ArithmeticError, ValueError) as exc:
                if is_outage(exc):
                    raise
                refused.add(n)
                self._dead_letter(received[n][1], f"not applied to {target.version}: {exc}")
        return flags

    def _observe(
        self,
        received: list[tuple[Event, Message]],
        applied: list[bool],
        outcome: BatchOutcome,
        started_ns: int,
    ) -> None:
        """Metrics for the batch, and with tracing on a span per event under the trace
        its message carried."""
        written = time.time()
        fresh = sum(applied)
        self.metrics.processed.labels("applied").inc(fresh)
        self.metrics.processed.labels("duplicate").inc(len(applied) - fresh)
        self.metrics.duplicates.inc(outcome.duplicates)
        for (event, _), was_applied in zip(received, applied, strict=True):
            outcome_name = "applied" if was_applied else "duplicate"
            self.metrics.processed_by_type.labels(event.event_type, outcome_name).inc()
        for _, message in received:
            kind, millis = message.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE and millis > 0:
                self.metrics.processing_seconds.observe(max(0.0, written - millis / 1000))
        if not self._tracing:
            return
        ended = time.time_ns()
        for (event, message), was_applied in zip(received, applied, strict=True):
            carrier = _carrier(message)
            span = self.tracer.start_span(
                "updater.apply",
                context=extract(carrier),
                kind=SpanKind.CONSUMER,
                start_time=started_ns,
                attributes={
                    "messaging.destination.name": message.topic() or "",
                    "messaging.kafka.partition": message.partition() or 0,
                    "recsys.event_id": event.event_id,
                    "recsys.event_type": event.event_type,
                    "recsys.applied": was_applied,
                    "recsys.model_versions": ",".join(outcome.versions),
                },
            )
            write = self.tracer.start_span(
                "redis.apply_events",
                context=set_span_in_context(span),
                kind=SpanKind.CLIENT,
                start_time=started_ns,
                attributes={"db.system": "redis", "recsys.batch_size": len(received)},
            )
            write.end(end_time=ended)
            span.end(end_time=ended)

    def _without_erased(self, received: list[tuple[Event, Message]]) -> list[tuple[Event, Message]]:
        """Drop the events of erased customers the broker received before their erasure
        (a redelivered message, or one raced by the erasure, must not bring them back,
        whatever time its client stamped on it); one Redis read per batch."""
        if not received:
            return received
        erased = erased_at(self.users, sorted({e.customer_id for e, _ in received}))
        if not erased:
            return received
        kept = [
            (e, m)
            for e, m in received
            if e.customer_id not in erased or received_ms(m) / 1000 > erased[e.customer_id]
        ]
        self.metrics.processed.labels("erased").inc(len(received) - len(kept))
        return kept

    def _dead_letter_delivered(self, err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            self._dlq_failed += 1

    def _parse_or_dead_letter(self, message: Message) -> Event | None:
        try:
            return Event.from_bytes(message.value() or b"")
        except ValidationError as exc:
            self._dead_letter(message, validation_reason(exc))
            return None

    def _dead_letter(self, message: Message, reason: str) -> None:
        self.dlq.produce(
            self.settings.dlq_topic,
            value=message.value() or b"",
            key=message.key(),
            headers=dead_letter_headers(reason, message.topic() or self.settings.events_topic),
            on_delivery=self._dead_letter_delivered,
        )
        log.warning("dead-lettered a message from partition %s: %s", message.partition(), reason)


# Replies of a Redis server that is not able to serve now, whatever the command: an
# outage, retried; any other error reply is the command's own (a key of another type, a
# script's error) and goes to the dead-letter topic with its message.
_OUTAGE_REPLIES: Final = frozenset(
    {"OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN",
     "TRYAGAIN", "MOVED", "ASK", "NOAUTH", "WRONGPASS", "NOPERM", "NOSCRIPT"}
)  # fmt: skip


def is_outage(exc: Exception) -> bool:
    if not isinstance(exc, ResponseError):
        return False
    words = str(exc).split(maxsplit=1)
    return bool(words) and words[0] in _OUTAGE_REPLIES


def _carrier(message: Message) -> dict[str, str]:
    """The message's headers as a trace-context carrier."""
    out: dict[str, str] = {}
    for header in message.headers() or []:
        name, value = header[0], header[1]
        if isinstance(value, bytes):
            out[str(name)] = value.decode(errors="replace")
        elif isinstance(value, str):
            out[str(name)] = value
    return out
