"""Publish events to Kafka and await the broker's acknowledgement."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from confluent_kafka import KafkaError, Message, Producer


class PublishError(RuntimeError):
    """The broker did not acknowledge the event; the client may retry with the same id."""


log = logging.getLogger(__name__)

# A delivery that timed out replaces the producer, at most this often.
REPLACE_EVERY_S: Final = 5.0
# Delivery errors after which the producer is replaced: the message timed out (the broker
# never acknowledges this producer again), or the broker does not know or accept its
# identity any more (a broker restarted without its state answers these).
STALE_PRODUCER: Final = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)


class EventPublisher:
    """One producer per process; a thread serves its delivery callbacks.

    An idempotent producer whose broker restarted without its state (the embedded broker
    keeps none) never gets an acknowledgement again: librdkafka retries the produce until
    the message times out, for good (measured against Tansu 0.6). So a delivery that
    times out, or an error that marks the producer's identity stale (fenced, an unknown
    producer id or epoch, a sequence out of order: what the restarted broker answers), or
    a fatal error, replaces the producer (at most every REPLACE_EVERY_S): the requests in
    flight get their 503, the client's retry goes to the new producer. The old one's
    messages are purged, so it stops retrying them (a retry would ask the broker for a
    producer id again and could fence the new producer), and it is polled until its last
    callback has run."""

    def __init__(self, new_producer: Callable[[], Producer], timeout_s: float) -> None:
        """new_producer: the bus's (recsys.bus.EventBus.producer)."""
        self._new_producer = new_producer
        self._producer = self._new_producer()
        self._replaced_at = time.monotonic()
        self._retiring: list[Producer] = []
        self._to_purge: list[Producer] = []  # retired, their messages not purged yet
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            while self._to_purge:  # outside its own callbacks
                self._to_purge.pop().purge(in_queue=True, in_flight=True, blocking=False)
            for old in list(self._retiring):
                if old.poll(0) == 0 and len(old) == 0:
                    self._retiring.remove(old)

    def _delivery_failed(self, err: KafkaError) -> None:
        """In the poll thread (delivery callbacks run there)."""
        stuck = err.code() in STALE_PRODUCER or err.fatal()
        if not stuck or time.monotonic() - self._replaced_at < REPLACE_EVERY_S:
            return
        self._replaced_at = time.monotonic()
        old, self._producer = self._producer, self._new_producer()
        self._retiring.append(old)
        self._to_purge.append(old)
        log.warning("a Kafka delivery failed (%s): the producer is replaced", err.str())

    async def publish(
        self,
        topic: str,
        key: str,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()

        def settle(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._delivery_failed(err)

            def apply() -> None:
                if acked.done():
                    return
                if err is None:
                    acked.set_result(None)
                else:
                    acked.set_exception(PublishError(err.str()))

            loop.call_soon_threadsafe(apply)

        try:
            self._producer.produce(
                topic, key=key.encode(), value=value, headers=headers, on_delivery=settle
            )
        except (BufferError, Exception) as exc:
            raise PublishError(str(exc)) from exc
        try:
            # librdkafka times the message out itself; this is the outer guard against hangs.
            await asyncio.wait_for(acked, timeout=self._timeout_s + 1.0)
        except TimeoutError as exc:
            raise PublishError("the broker did not acknowledge in time") from exc

    def broker_reachable(self, timeout_s: float = 0.5) -> bool:
        try:
            self._producer.list_topics(timeout=timeout_s)
        except Exception:
            return False
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=2)
        for old in self._retiring:
            old.flush(0)
