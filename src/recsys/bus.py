"""The event bus role: every producer and consumer of the project is made here.

The bus speaks the Kafka protocol (the embedded Tansu broker, Apache Kafka, Redpanda,
a managed service). `EventBus` is what the parts need of it; `KafkaBus` makes the
clients with the project's settings, created once per process and handed to the parts.
`tests/recsys/test_bus_contract.py` holds every broker to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Final, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # re-exported implicitly only
from confluent_kafka.cimpl import NewTopic

from recsys.settings import Settings

log = logging.getLogger(__name__)


def client_config(bootstrap: str, settings: Settings | None) -> dict[str, Any]:
    """What every producer, consumer and admin client of the project starts from: the
    brokers and the security settings (SASL, TLS) of `settings`. None: plaintext without
    credentials (a test's embedded broker)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    if settings is None or settings.kafka_security_protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = settings.kafka_security_protocol.lower()
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # the settings' validator holds it
        config["sasl.mechanisms"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    files = {
        "ssl.ca.location": settings.kafka_ssl_ca_file,
        "ssl.certificate.location": settings.kafka_ssl_cert_file,
        "ssl.key.location": settings.kafka_ssl_key_file,
    }
    config.update({key: str(path) for key, path in files.items() if path is not None})
    return config


def producer_config(bootstrap: str, settings: Settings) -> dict[str, Any]:
    timeout_ms = int(settings.kafka_produce_timeout_s * 1000)
    return {
        **client_config(bootstrap, settings),
        # Idempotent and acknowledged by all replicas: a 202 means the event is stored.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "message.timeout.ms": timeout_ms,
        "socket.timeout.ms": max(timeout_ms, 1000),
    }


def consumer_config(bootstrap: str, group: str, settings: Settings) -> dict[str, Any]:
    return {
        **client_config(bootstrap, settings),
        "group.id": group,
        "auto.offset.reset": "earliest",
        # Offsets are committed by hand, only after the work they stand for is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
    }


class TopicSettingsError(RuntimeError):
    """The brokers cannot hold the topics as the settings ask (more copies than brokers)."""


# The catalog topic keeps each article's newest message however old it is (the serving
# processes read it from the start): compacted, not deleted after a retention time.
COMPACTED: Final = {"cleanup.policy": "compact"}


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The events, dead-letter and catalog topics as a command creates them: partitions,
    replication factor and min.insync.replicas by the settings, the catalog compacted."""
    replicas = settings.kafka_replication_factor
    durable = {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}
    return [
        NewTopic(settings.events_topic, settings.events_partitions, replicas, config=durable),
        NewTopic(settings.dlq_topic, 1, replicas, config=durable),
        # A few messages a minute: one partition keeps every article in the order sent.
        NewTopic(settings.catalog_topic, 1, replicas, config={**durable, **COMPACTED}),
    ]


def ensure_topics(bootstrap: str, settings: Settings, timeout_s: float = 10.0) -> None:
    """Create the events topic, its dead-letter topic and the catalog topic where they
    are missing (topic_specs); a topic there already is left as it is."""
    admin = AdminClient(client_config(bootstrap, settings))
    metadata = admin.list_topics(timeout=timeout_s)
    missing = [spec for spec in topic_specs(settings) if spec.topic not in metadata.topics]
    if settings.catalog_topic in metadata.topics:
        _warn_if_not_compacted(admin, settings.catalog_topic, timeout_s)
    if not missing:
        return
    # Checked only where a topic is to be made: a cluster with a broker down still serves
    # the topics it has. Kafka refuses too (INVALID_REPLICATION_FACTOR); the embedded
    # broker would accept and keep one copy.
    brokers = len(metadata.brokers)
    if settings.kafka_replication_factor > brokers:
        raise TopicSettingsError(
            f"RECSYS_KAFKA_REPLICATION_FACTOR is {settings.kafka_replication_factor} but the "
            f"brokers at {bootstrap} are {brokers}: topics {', '.join(t.topic for t in missing)} "
            "cannot have that many copies"
        )
    for future in admin.create_topics(missing, operation_timeout=timeout_s).values():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def _warn_if_not_compacted(admin: AdminClient, topic: str, timeout_s: float) -> None:
    """A catalog topic made before it was compacted (or by hand) loses articles to its
    retention time: say so, with the fix. A broker that does not report the policy (the
    embedded one reports only what it was given) is not questioned."""
    try:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        (future,) = admin.describe_configs([resource]).values()
        entry = future.result(timeout_s).get("cleanup.policy")
    except KafkaException as exc:
        log.debug("could not read the configuration of %s: %s", topic, exc)
        return
    if entry is not None and "compact" not in str(entry.value).split(","):
        log.warning(
            "topic %s has cleanup.policy=%s: articles older than its retention are lost to "
            "the serving processes that read it from the start; make it compacted "
            "(kafka-configs --alter --entity-type topics --entity-name %s "
            "--add-config cleanup.policy=compact)",
            topic, entry.value, topic,
        )  # fmt: skip


def pending_events(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    timeout_s: float = 5.0,
    cap: int = 100_000,
    settings: Settings | None = None,
) -> int:
    """How many messages the group has not committed yet, counted by reading them
    (settings: the brokers' security, client_config).

    Reading is the count because the embedded broker reports high watermarks per record
    batch, not per record; the watermarks still bound it from below, for when reading
    finds nothing because the broker is too slow to answer.
    """
    probe = Consumer(
        {
            **client_config(bootstrap, settings),
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


def wait_drained(
    bootstrap: str,
    topic: str,
    groups: list[str],
    timeout_s: float,
    settings: Settings | None = None,
) -> int:
    """Wait until every group has consumed everything (or timeout); return the most left
    (settings: the brokers' security, client_config)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = max(
                # At least a second to answer, even with no time left to wait.
                pending_events(
                    bootstrap,
                    topic,
                    group,
                    timeout_s=min(5.0, max(1.0, timeout_s)),
                    settings=settings,
                )
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


class EventBus(Protocol):
    """What the parts need of the bus."""

    bootstrap: str

    def producer(self, **overrides: Any) -> Producer:
        """An idempotent producer whose acknowledgement means the message is stored."""
        ...

    def consumer(self, group: str, **overrides: Any) -> Consumer:
        """A member of `group` that commits by hand, from the earliest offset when the
        group has none."""
        ...

    def reader(self, name: str, **overrides: Any) -> Consumer:
        """A consumer of a group of its own (named after `name`), for reading a topic
        through without taking part in a group's work; it commits nothing."""
        ...

    def ensure_topics(self) -> None:
        """Create the events, dead-letter and catalog topics where they are missing."""
        ...

    def pending(self, topic: str, group: str) -> int:
        """How many messages of topic the group has not committed."""
        ...

    def wait_drained(self, topic: str, groups: list[str], timeout_s: float) -> int:
        """Wait until every group has committed everything (or timeout); the most left."""
        ...


class KafkaBus:
    """The bus on a Kafka-protocol broker at bootstrap, with the project's settings."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.bootstrap = bootstrap
        self.settings = settings

    def producer(self, **overrides: Any) -> Producer:
        return Producer({**producer_config(self.bootstrap, self.settings), **_logged(overrides)})

    def consumer(self, group: str, **overrides: Any) -> Consumer:
        config = consumer_config(self.bootstrap, group, self.settings)
        return Consumer({**config, **_logged(overrides)})

    def reader(self, name: str, **overrides: Any) -> Consumer:
        return self.consumer(f"{name}-{uuid.uuid4().hex[:12]}", **overrides)

    def ensure_topics(self) -> None:
        ensure_topics(self.bootstrap, self.settings)

    def pending(self, topic: str, group: str) -> int:
        return pending_events(self.bootstrap, topic, group, settings=self.settings)

    def wait_drained(self, topic: str, groups: list[str], timeout_s: float) -> int:
        return wait_drained(self.bootstrap, topic, groups, timeout_s, self.settings)


def _logged(overrides: dict[str, Any]) -> dict[str, Any]:
    """librdkafka's own lines (a broker gone: one every 50 ms) go through logging."""
    return {"logger": logging.getLogger("recsys.kafka"), **overrides}
