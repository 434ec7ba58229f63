"""Nothing a client sends stops the stream: each bad message put straight onto the events
topic goes to the dead-letter topic with its reason, or is applied once where it is a
valid event, while an updater and an archiver keep running and apply and archive the
next good event once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.bus import consumer_config, producer_config
from recsys.events import Event
from recsys.settings import Settings
from serve.app import create_app
from stream.archiver import Archiver
from stream.updater import Updater
from support import own_stream, wait_for

LONG_ID = "c" * 128


@dataclass
class Stream:
    settings: Settings
    producer: Producer
    dlq: Consumer
    threads: list[threading.Thread]
    dead: dict[bytes, str]  # message value -> reason, as read from the dead-letter topic

    def send(self, value: bytes, key: bytes = b"k") -> None:
        self.producer.produce(self.settings.events_topic, key=key, value=value)
        assert self.producer.flush(10) == 0

    def dead_letter(self, value: bytes, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while value not in self.dead and time.monotonic() < deadline:
            for message in self.dlq.consume(100, 0.3):
                if message.error() is None:
                    headers = dict(message.headers() or [])
                    self.dead[message.value() or b""] = headers["reason"].decode()
        assert value in self.dead, f"not dead-lettered: {value[:80]!r}"
        return self.dead[value]

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)


@pytest.fixture
def stream(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, tmp_path: Path
) -> Iterator[Stream]:
    bootstrap = str(settings.kafka_bootstrap_servers)
    own = own_stream(settings, tmp_path / "data")
    topic = own.events_topic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(own.dlq_topic, 1, 1)])[own.dlq_topic].result(10)
    stop = threading.Event()
    consumers = []
    threads = []
    for group, make in ((own.updater_group, "updater"), (own.archiver_group, "archiver")):
        consumer = Consumer(consumer_config(bootstrap, group, own))
        consumer.subscribe([topic])
        consumers.append(consumer)
        worker: Updater | Archiver = (
            Updater(own, redis_conn, consumer, Producer(producer_config(bootstrap, own)))
            if make == "updater"
            else Archiver(own, consumer)
        )
        threads.append(threading.Thread(target=worker.run, args=(stop,), daemon=True))
    dlq = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"dlq-{topic}",
         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
         "heartbeat.interval.ms": 500}
    )  # fmt: skip
    dlq.subscribe([own.dlq_topic])
    for thread in threads:
        thread.start()
    try:
        yield Stream(own, Producer(producer_config(bootstrap, own)), dlq, threads, {})
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
        for consumer in (*consumers, dlq):
            consumer.close()


def _good(stream: Stream, redis_conn: redis.Redis, version: str, article: str) -> None:
    """A good event after the bad ones: applied once and archived once."""
    customer = f"good-{uuid.uuid4().hex[:8]}"
    event = Event(customer_id=customer, article_id=article)
    stream.send(event.to_bytes(), customer.encode())
    profile = keys.profile(version, customer)
    wait_for(lambda: redis_conn.hget(profile, "purchases") == b"1", timeout=30)
    wait_for(lambda: _archived(stream.settings, customer) == [event.event_id], timeout=30)
    assert stream.alive()


def _archived(settings: Settings, customer: str) -> list[str]:
    try:
        table = DeltaTable(str(settings.events_table))
    except Exception:
        return []
    frame = table.to_pandas(columns=["customer_id", "event_id"])
    return sorted(frame.loc[frame["customer_id"] == customer, "event_id"])


def _raw(**fields: object) -> bytes:
    base: dict[str, object] = {"customer_id": f"bad-{uuid.uuid4().hex[:8]}", "article_id": "a1"}
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_raw(ts="0001-01-01T00:00:00"), "ts"),
        (_raw(ts="9999-12-31T23:59:59"), "ts"),
        (_raw(ts="0001-01-01T00:00:00+14:00"), "ts"),
        (_raw(price=1e308), "price"),
        (b'{"customer_id": "c-nan", "article_id": "a1", "price": NaN}', "price"),
        (_raw(customer_id="c\n"), "customer_id"),
        (_raw(customer_id="c" * 129), "customer_id"),
        (b"\xff\xfe not json", "message"),
        (_raw(schema_version=2), "schema_version"),
    ],
    ids=[
        "year-1",
        "year-9999",
        "year-1-at-+14",
        "price-1e308",
        "nan",
        "newline-id",
        "id-129",
        "not-json",
        "future-version",
    ],
)
def test_a_bad_message_is_dead_lettered_and_the_stream_goes_on(
    stream: Stream, redis_conn: redis.Redis, trained: BatchReport,
    transactions: pd.DataFrame, value: bytes, reason: str,
) -> None:  # fmt: skip
    stream.send(value)
    assert reason in stream.dead_letter(value)
    _good(stream, redis_conn, trained.version, str(transactions["article_id"].iloc[0]))


def test_valid_oddities_are_applied_once_each(
    stream: Stream, redis_conn: redis.Redis, trained: BatchReport, transactions: pd.DataFrame
) -> None:
    """An offset of +14:00, a naive time, a 128-character id, one event id from two
    customers: events, each applied and archived once, per customer."""
    article = str(transactions["article_id"].iloc[0])
    version = trained.version
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    now = pd.Timestamp.now(tz="UTC")
    odd = [
        {"customer_id": f"tz-{shared}", "ts": now.tz_convert("Etc/GMT-14").isoformat()},
        {"customer_id": f"naive-{shared}", "ts": now.tz_localize(None).isoformat()},
        {"customer_id": LONG_ID},
        {"customer_id": f"one-{shared}", "event_id": shared},
        {"customer_id": f"two-{shared}", "event_id": shared},
    ]
    redis_conn.delete(keys.profile(version, LONG_ID))
    for fields in odd:
        stream.send(_raw(article_id=article, **fields), str(fields["customer_id"]).encode())
    for fields in odd:
        customer = str(fields["customer_id"])
        wait_for(lambda c=customer: redis_conn.hget(keys.profile(version, c), "purchases")
                 == b"1", timeout=30)  # fmt: skip
        wait_for(lambda c=customer: len(_archived(stream.settings, c)) == 1, timeout=30)
    assert _archived(stream.settings, f"one-{shared}") == _archived(
        stream.settings, f"two-{shared}"
    ) == [shared]  # fmt: skip
    assert stream.alive()


def test_a_key_redis_refuses_dead_letters_that_event_only(
    stream: Stream, redis_conn: redis.Redis, trained: BatchReport, transactions: pd.DataFrame
) -> None:
    """Redis answers the customer's script with an error (their state key holds another
    type): that event goes to the dead-letter topic with Redis's reason, the rest of its
    batch is applied, nothing is retried for ever."""
    article = str(transactions["article_id"].iloc[0])
    broken = f"broken-{uuid.uuid4().hex[:8]}"
    redis_conn.hset(keys.applied_events(trained.version, broken), "not", "a string")
    bad = Event(customer_id=broken, article_id=article)
    others = [Event(customer_id=f"fine-{uuid.uuid4().hex[:8]}", article_id=article)
              for _ in range(3)]  # fmt: skip
    for event in [others[0], bad, *others[1:]]:
        stream.producer.produce(stream.settings.events_topic, key=event.customer_id.encode(),
                                value=event.to_bytes())  # fmt: skip
    assert stream.producer.flush(10) == 0
    assert "WRONGTYPE" in stream.dead_letter(bad.to_bytes())
    for event in others:
        wait_for(lambda e=event: redis_conn.hget(keys.profile(trained.version, e.customer_id),
                                                 "purchases") == b"1", timeout=30)  # fmt: skip
    _good(stream, redis_conn, trained.version, article)


def test_a_message_over_the_size_limit_is_refused_before_the_topic(
    settings: Settings, transactions: pd.DataFrame
) -> None:
    """The producer refuses it (the API's body limit answers 413 first)."""
    producer = Producer(producer_config(str(settings.kafka_bootstrap_servers), settings))
    with pytest.raises(KafkaException, match="MSG_SIZE_TOO_LARGE"):
        producer.produce(settings.events_topic, value=b"x" * 2_000_000)
    with TestClient(create_app(settings)) as api:
        body = {"customer_id": "c1", "article_id": "a1", "pad": "x" * 2_000_000}
        assert api.post("/events/purchase", json=body).status_code == 413


@pytest.mark.parametrize(
    ("field", "value"),
    [("ts", "0001-01-01T00:00:00"), ("ts", "9999-12-31T23:59:59"), ("price", 1e308),
     ("customer_id", "c\n"), ("customer_id", "c" * 129)],
)  # fmt: skip
def test_the_api_answers_422_naming_the_field(
    settings: Settings, field: str, value: object
) -> None:
    with TestClient(create_app(settings)) as api:
        body = {"customer_id": "c1", "article_id": "a1", field: value}
        answer = api.post("/events/purchase", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
