"""Kafka plumbing against the real broker: topics, and the count the drain waits on."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from recsys.bus import consumer_config, ensure_topics, pending_events, producer_config
from recsys.settings import Settings


def test_topics_exist_with_partitions(settings: Settings) -> None:
    assert settings.kafka_bootstrap_servers
    ensure_topics(settings.kafka_bootstrap_servers, settings)  # a second call is harmless
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[settings.events_topic].partitions) == settings.events_partitions >= 2
    assert settings.dlq_topic in topics


def test_pending_events_counts_what_a_group_has_not_committed(settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    topic = f"drain-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(10)
    producer = Producer(producer_config(bootstrap, settings))
    for i in range(25):
        producer.produce(topic, key=f"c{i % 7}".encode(), value=b"x")
    assert producer.flush(10) == 0
    group = f"g-{uuid.uuid4().hex[:8]}"
    assert pending_events(bootstrap, topic, group) == 25

    consumer = Consumer(consumer_config(bootstrap, group, settings))
    consumer.subscribe([topic])
    last: dict[int, int] = {}
    read = 0
    deadline = time.monotonic() + 30
    try:
        while read < 25 and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is None and partition is not None and offset is not None:
                    last[partition] = max(last.get(partition, -1), offset)
                    read += 1
        assert read == 25
        # Half committed: the rest is still pending.
        first = min(last)
        consumer.commit(offsets=[TopicPartition(topic, first, last[first] + 1)], asynchronous=False)
        remaining = pending_events(bootstrap, topic, group)
        assert 0 < remaining < 25
        consumer.commit(
            offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False
        )
    finally:
        consumer.close()
    assert pending_events(bootstrap, topic, group) == 0
