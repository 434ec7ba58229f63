"""Kafka plumbing: client configs, topics, a producer that awaits acks, consumer lag."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from recsys.settings import Settings


def producer_config(bootstrap: str, settings: Settings) -> dict[str, Any]:
    timeout_ms = int(settings.kafka_produce_timeout_s * 1000)
    return {
        "bootstrap.servers": bootstrap,
        # Idempotent and acknowledged by all replicas: a 202 means the event is stored.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "message.timeout.ms": timeout_ms,
        "socket.timeout.ms": max(timeout_ms, 1000),
    }


def consumer_config(bootstrap: str, group: str, settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        # Offsets are committed by hand, only after the work they stand for is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
    }


def ensure_topics(bootstrap: str, settings: Settings, timeout_s: float = 10.0) -> None:
    """Create the events topic, its dead-letter topic and the catalog topic where they
    are missing."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = {
        settings.events_topic: settings.events_partitions,
        settings.dlq_topic: 1,
        # A few messages a minute: one partition keeps every article in the order sent.
        settings.catalog_topic: 1,
    }
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [NewTopic(name, parts, 1) for name, parts in wanted.items() if name not in existing]
    if not missing:
        return
    for future in admin.create_topics(missing, operation_timeout=timeout_s).values():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def pending_events(
    bootstrap: str, topic: str, group: str, *, timeout_s: float = 5.0, cap: int = 100_000
) -> int:
    """How many messages the group has not committed yet, counted by reading them.

    Reading is the count because the embedded broker reports high watermarks per record
    batch, not per record; the watermarks still bound it from below, for when reading
    finds nothing because the broker is too slow to answer.
    """
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    try:
        metadata = probe.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = probe.committed(partitions, timeout=timeout_s)
        probe.assign(
            [
                TopicPartition(
                    topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
                for tp in committed
            ]
        )
        count = 0
        deadline = time.monotonic() + timeout_s
        while count < cap and time.monotonic() < deadline:
            batch = probe.consume(1000, timeout=0.3)
            real = [m for m in batch if m.error() is None]
            if not batch:
                break
            count += len(real)
        # A broker too busy to answer a fetch in time returns nothing, which is not
        # "nothing left": the high watermarks bound it from below (at worst one record
        # batch short, where a broker reports them per batch).
        behind = 0
        for tp in committed:
            _, high = probe.get_watermark_offsets(tp, timeout=timeout_s)
            behind += max(0, high - max(tp.offset, 0))
        return max(count, min(behind, cap))
    finally:
        probe.close()


def wait_drained(bootstrap: str, topic: str, groups: list[str], timeout_s: float) -> int:
    """Wait until every group has consumed everything (or timeout); return the most left."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = max(
                # At least a second to answer, even with no time left to wait.
                pending_events(bootstrap, topic, group, timeout_s=min(5.0, max(1.0, timeout_s)))
                for group in groups
            )
        except KafkaException:  # a broker that does not answer yet: ask again
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
            continue
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)
