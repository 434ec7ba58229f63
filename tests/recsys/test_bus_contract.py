"""The event bus role's contract: what every broker behind `recsys.bus.EventBus` must do
for the parts (acknowledged means stored, per-key order, headers, commits by hand,
readers that commit nothing, the count the drain waits on).

It runs against the embedded broker the suite starts, and against another
Kafka-protocol broker when RECSYS_TEST_KAFKA_BOOTSTRAP names one (Apache Kafka,
Redpanda, a managed service).
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic
from pydantic import ValidationError

from recsys.bus import EventBus, KafkaBus, TopicSettingsError
from recsys.settings import Settings

EXTERNAL_ENV = "RECSYS_TEST_KAFKA_BOOTSTRAP"


# The embedded broker always; another only when named.
BROKERS = ["embedded", *(["external"] if os.environ.get(EXTERNAL_ENV) else [])]


@pytest.fixture(params=BROKERS)
def bus(request: pytest.FixtureRequest, settings: Settings) -> EventBus:
    if request.param == "external":
        bootstrap = os.environ.get(EXTERNAL_ENV)
    else:
        bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    return KafkaBus(bootstrap, settings)


def _fresh_topic(bus: EventBus, partitions: int = 2) -> str:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bus.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
    return topic


def _produce(bus: EventBus, topic: str, count: int, keys: int = 5) -> None:
    producer = bus.producer()
    for i in range(count):
        producer.produce(topic, key=f"c{i % keys}".encode(), value=str(i).encode(),
                         headers=[("n", str(i).encode())])  # fmt: skip
    assert producer.flush(10) == 0, "every message acknowledged"


def _read(consumer: Consumer, want: int, timeout_s: float = 20) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, 0.3) if m.error() is None]
    return got


def _commit_all(consumer: Consumer, messages: list[Message]) -> None:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (str(m.topic()), int(m.partition() or 0))
        last[key] = max(last.get(key, -1), int(m.offset() or 0))
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
    consumer.commit(offsets=offsets, asynchronous=False)


def test_topics_are_made_once_with_their_partitions(bus: EventBus, settings: Settings) -> None:
    bus.ensure_topics()
    bus.ensure_topics()  # a second call is harmless
    topics = AdminClient({"bootstrap.servers": bus.bootstrap}).list_topics(timeout=10).topics
    assert len(topics[settings.events_topic].partitions) == settings.events_partitions >= 2
    assert settings.dlq_topic in topics and settings.catalog_topic in topics


def _own_topics(settings: Settings, **update: object) -> Settings:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    topics = {"events_topic": name, "dlq_topic": f"{name}.dlq", "catalog_topic": f"{name}.cat"}
    return settings.model_copy(update={**topics, **update})


def test_topics_are_made_with_their_copies_and_the_catalog_compacted(
    bus: EventBus, settings: Settings
) -> None:
    """Replication factor and min.insync.replicas by the settings on every topic, the
    catalog compacted. (The embedded broker stores and reports these configurations but
    neither replicates nor compacts: docs/events.md.)"""
    admin = AdminClient({"bootstrap.servers": bus.bootstrap})
    brokers = len(admin.list_topics(timeout=10).brokers)
    own = _own_topics(settings, kafka_replication_factor=brokers,
                      kafka_min_insync_replicas=max(1, brokers - 1))  # fmt: skip
    KafkaBus(bus.bootstrap, own).ensure_topics()
    names = [own.events_topic, own.dlq_topic, own.catalog_topic]
    topics = admin.list_topics(timeout=10).topics
    for name in names:
        assert all(len(p.replicas) == brokers for p in topics[name].partitions.values())
    configs = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    )
    found = {r.name: {k: e.value for k, e in f.result(10).items()} for r, f in configs.items()}
    for name in names:
        assert found[name]["min.insync.replicas"] == str(own.kafka_min_insync_replicas)
    assert found[own.catalog_topic]["cleanup.policy"] == "compact"
    assert found[own.events_topic].get("cleanup.policy", "delete") == "delete"


def test_more_copies_than_brokers_are_refused_before_any_topic_is_made(
    bus: EventBus, settings: Settings
) -> None:
    admin = AdminClient({"bootstrap.servers": bus.bootstrap})
    brokers = len(admin.list_topics(timeout=10).brokers)
    own = _own_topics(settings, kafka_replication_factor=brokers + 1)
    with pytest.raises(TopicSettingsError, match="RECSYS_KAFKA_REPLICATION_FACTOR"):
        KafkaBus(bus.bootstrap, own).ensure_topics()
    assert own.events_topic not in admin.list_topics(timeout=10).topics


def test_copies_the_settings_cannot_have_are_refused_at_load() -> None:
    base = {"_env_file": None}
    with pytest.raises(ValidationError, match="embedded broker is one node"):
        Settings(**base, kafka_bootstrap_servers=None, kafka_replication_factor=3)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at most kafka_replication_factor"):
        Settings(**base, kafka_bootstrap_servers="k:9092", kafka_replication_factor=2,
                 kafka_min_insync_replicas=3)  # type: ignore[arg-type]  # fmt: skip
    cluster = Settings(**base, kafka_bootstrap_servers="k:9092", kafka_replication_factor=3,
                       kafka_min_insync_replicas=2)  # type: ignore[arg-type]  # fmt: skip
    assert (cluster.kafka_replication_factor, cluster.kafka_min_insync_replicas) == (3, 2)


def test_a_group_gets_every_acknowledged_message_in_key_order_with_headers(
    bus: EventBus,
) -> None:
    topic = _fresh_topic(bus)
    _produce(bus, topic, 40)
    consumer = bus.consumer(f"g-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    try:
        got = _read(consumer, 40)
    finally:
        consumer.close()
    assert len(got) == 40
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for m in got:
        by_key[m.key() or b""].append(int(m.value() or b"-1"))
        assert dict(m.headers() or []) == {"n": m.value()}
    assert all(values == sorted(values) for values in by_key.values()), "per-key order"
    assert sorted(v for values in by_key.values() for v in values) == list(range(40))


def test_only_what_a_group_committed_is_not_read_again(bus: EventBus) -> None:
    topic = _fresh_topic(bus)
    _produce(bus, topic, 20)
    group = f"g-{uuid.uuid4().hex[:8]}"

    def member_reads(want: int, commit: bool) -> int:
        consumer = bus.consumer(group)
        consumer.subscribe([topic])
        try:
            got = _read(consumer, want, timeout_s=20 if want else 6)
            if commit and got:
                _commit_all(consumer, got)
            return len(got)
        finally:
            consumer.close()

    assert member_reads(20, commit=False) == 20
    assert member_reads(20, commit=True) == 20, "nothing committed: all again"
    assert member_reads(0, commit=False) == 0, "all committed: nothing again"


def test_pending_counts_what_a_group_has_not_committed_and_the_drain_waits_for_it(
    bus: EventBus,
) -> None:
    topic = _fresh_topic(bus)
    _produce(bus, topic, 25, keys=7)
    group = f"g-{uuid.uuid4().hex[:8]}"
    assert bus.pending(topic, group) == 25
    assert bus.wait_drained(topic, [group], timeout_s=1) == 25
    consumer = bus.consumer(group)
    consumer.subscribe([topic])
    try:
        got = _read(consumer, 25)
        assert len(got) == 25
        one_partition = [m for m in got if m.partition() == got[0].partition()]
        _commit_all(consumer, one_partition)
        assert 0 < bus.pending(topic, group) < 25
        _commit_all(consumer, got)
    finally:
        consumer.close()
    assert bus.pending(topic, group) == 0
    assert bus.wait_drained(topic, [group], timeout_s=5) == 0


def test_a_reader_reads_from_the_start_and_commits_nothing(bus: EventBus) -> None:
    topic = _fresh_topic(bus, partitions=1)
    _produce(bus, topic, 10)
    for _ in range(2):
        reader = bus.reader("contract-reader")
        reader.subscribe([topic])
        try:
            assert len(_read(reader, 10)) == 10
            committed = reader.committed([TopicPartition(topic, 0)], timeout=10)
            assert committed[0].offset < 0, "a reader commits nothing"
        finally:
            reader.close()
