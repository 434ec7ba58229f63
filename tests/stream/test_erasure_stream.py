"""An erased customer's events received before the erasure, redelivered or raced by it,
do not bring them back through the updater or the archiver, whatever their stamp; their
purchases received after it count (a returning customer)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer
from deltalake import DeltaTable
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.bus import consumer_config, pending_events, producer_config
from recsys.erasure import erase_customer, record_erasure
from recsys.events import Event
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from stream.archiver import Archiver
from support import events_on_topic, new_topic, own_stream, running_updater, wait_for


@pytest.fixture(scope="module")
def updater(settings: Settings, redis_conn: redis.Redis, trained: BatchReport) -> Iterator[str]:
    with running_updater(settings, redis_conn) as group:
        yield group


def test_events_received_before_an_erasure_are_dropped_whatever_their_stamp(
    api: TestClient, updater: str, settings: Settings, trained: BatchReport,
    redis_conn: redis.Redis, transactions: pd.DataFrame,
) -> None:  # fmt: skip
    """An erasure goes by when the stack received an event (its broker time), not by
    the time the client stamped on it: an event raced by the erasure, stamped an hour
    late, stays out; an event sent after it counts, even stamped a minute early."""
    customer = f"erase-me-{uuid.uuid4().hex[:10]}"
    article = str(transactions["article_id"].iloc[0])
    vector = keys.user_vector(trained.version, customer)
    bootstrap = str(settings.kafka_bootstrap_servers)

    def post(ts: datetime) -> str:
        event_id = f"evt-{uuid.uuid4().hex}"
        body = {"customer_id": customer, "article_id": article, "event_id": event_id,
                "ts": ts.isoformat()}  # fmt: skip
        assert api.post("/events/purchase", json=body).status_code == 202
        return event_id

    first = post(datetime.now(UTC))
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == first.encode())
    assert redis_conn.exists(vector)

    report = erase_customer(settings, RedisUserStore(redis_conn), customer)
    assert not redis_conn.exists(vector)

    # Received a second before the erasure (a message in flight, or redelivered), stamped
    # an hour after it by its client: it changes nothing.
    raced = Event(customer_id=customer, article_id=article,
                  ts=report.erased_at + timedelta(hours=1))  # fmt: skip
    producer = Producer(producer_config(bootstrap, settings))
    received = int((report.erased_at - timedelta(seconds=1)).timestamp() * 1000)
    producer.produce(settings.events_topic, key=customer.encode(), value=raced.to_bytes(),
                     timestamp=received)  # fmt: skip
    assert producer.flush(10) == 0
    wait_for(lambda: pending_events(bootstrap, settings.events_topic, updater) == 0)
    assert not redis_conn.exists(vector)
    assert not redis_conn.exists(keys.history(customer))

    # The customer comes back and buys, stamped a minute early by a slow clock: it counts.
    back = post(datetime.now(UTC) - timedelta(minutes=1))
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == back.encode())
    assert redis_conn.exists(vector)


def test_the_archiver_keeps_an_erased_customers_old_events_out(
    settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    topic = new_topic(settings)
    own = settings.model_copy(
        update={"data_dir": tmp_path / "data", "events_topic": topic,
                "archiver_group": f"arch-{topic}", "archiver_flush_interval_s": 0.2}
    )  # fmt: skip
    now = datetime.now(UTC)
    record_erasure(own, RedisUserStore(redis_conn), "gone-customer", now)
    early, late = now - timedelta(minutes=1), now + timedelta(seconds=1)
    # (event, when the broker received it): by receipt, never by the client's stamp.
    events = {
        "raced": (Event(customer_id="gone-customer", article_id="a1", ts=late), early),
        "back": (Event(customer_id="gone-customer", article_id="a1", ts=early), late),
        "other": (Event(customer_id="kept-customer", article_id="a1", ts=early), early),
    }
    producer = Producer(producer_config(bootstrap, own))
    for event, received in events.values():
        producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes(),
                         timestamp=int(received.timestamp() * 1000))  # fmt: skip
    assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(bootstrap, own.archiver_group, own))
    consumer.subscribe([topic])
    stop = threading.Event()
    worker = threading.Thread(target=Archiver(own, consumer).run, args=(stop,), daemon=True)
    worker.start()
    try:
        wait_for(lambda: pending_events(bootstrap, topic, own.archiver_group) == 0, timeout=40)
    finally:
        stop.set()
        worker.join(10)
        consumer.close()
    archived = set(DeltaTable(str(own.events_table)).to_pandas()["event_id"])
    assert archived == {events["back"][0].event_id, events["other"][0].event_id}


def test_an_erasure_during_an_archiver_flush_leaves_none_of_its_rows(
    settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    """The flush read the erasures before the erasure was recorded, and the erasure's
    DELETE ran before the flush's append: the archiver deletes the rows again."""
    own = own_stream(settings, tmp_path / "data")
    events = [Event(customer_id=c, article_id="a1") for c in ("gone-later", "kept", "gone-later")]
    with events_on_topic(own, events) as (consumer, messages):
        archiver = Archiver(own, consumer)
        rows, _ = archiver._event_rows(messages)
        assert rows.num_rows == 3
        erase_customer(own, RedisUserStore(redis_conn), "gone-later")
        archiver._append_events(own.events_table, rows)
    archived = DeltaTable(str(own.events_table)).to_pandas()
    assert archived["customer_id"].tolist() == ["kept"]
