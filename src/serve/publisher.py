"""Publish events to Kafka and await the broker's acknowledgement."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer


class PublishError(RuntimeError):
    """The broker did not acknowledge the event; the client may retry with the same id."""


class EventPublisher:
    """One producer per process; a thread serves its delivery callbacks."""

    def __init__(self, config: dict[str, Any], timeout_s: float) -> None:
        # librdkafka's own log lines go through Python logging, not straight to stderr.
        self._producer = Producer(config, logger=logging.getLogger("recsys.kafka"))
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

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
