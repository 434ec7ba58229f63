"""`recsys updater`: purchase events move the customer's vector in Redis, once each.

At-least-once from Kafka, exactly-once in effect: each event is applied by one atomic
Redis step (stream/apply.py), and offsets are committed only after that write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from confluent_kafka import Consumer, Message, Producer
from pydantic import ValidationError

from recsys.events import Event
from recsys.settings import Settings
from stream.apply import EventApplier
from stream.offsets import commit_processed

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    versions: list[str] = field(default_factory=list)


class Updater:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        consumer: Consumer,
        dlq_producer: Producer,
    ) -> None:
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.dlq = dlq_producer
        self.applier = EventApplier(settings, client)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            messages = self.consumer.consume(self.settings.updater_batch_size, 0.1)
            if messages:
                self._process_until_done(messages, stop)

    def _process_until_done(self, messages: Sequence[Message], stop: threading.Event) -> None:
        """Retry a batch on Redis errors with backoff; its offsets wait until it succeeds."""
        delay = 0.1
        while True:
            try:
                self.process(messages)
                return
            except redis.RedisError as exc:
                if stop.is_set():
                    return  # not committed: redelivered to whoever consumes next
                log.warning("redis unavailable (%s); retrying in %.1f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def process(self, messages: Sequence[Message]) -> BatchOutcome:
        outcome = BatchOutcome()
        events: list[Event] = []
        for message in messages:
            if message.error() is not None:
                continue
            event = self._parse_or_dead_letter(message)
            if event is None:
                outcome.dead_lettered += 1
            else:
                events.append(event)
        if outcome.dead_lettered:
            self.dlq.flush(self.settings.kafka_produce_timeout_s)
        if events:
            outcome.versions = self.applier.active_versions()
            for version in outcome.versions:
                applied, duplicates = self.applier.apply(version, events)
                outcome.applied += applied
                outcome.duplicates += duplicates
        commit_processed(self.consumer, messages)
        return outcome

    def _parse_or_dead_letter(self, message: Message) -> Event | None:
        raw = message.value() or b""
        try:
            return Event.from_bytes(raw)
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}"
                for err in exc.errors()
            )
            self.dlq.produce(
                self.settings.dlq_topic,
                value=raw,
                key=message.key(),
                headers=[("reason", reason[:1000].encode()), ("source_topic", b"events")],
            )
            log.warning(
                "dead-lettered a message from partition %s: %s", message.partition(), reason
            )
            return None
