"""An erased customer's old events, redelivered or late, do not bring them back through
the updater; their purchases after the erasure count (a returning customer)."""

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
from recsys.erasure import erase_customer, record_erasure
from recsys.events import Event
from recsys.settings import Settings
from stream.archiver import Archiver
from stream.bus import consumer_config, pending_events, producer_config
from support import new_topic, running_updater, wait_for


@pytest.fixture(scope="module")
def updater(settings: Settings, redis_conn: redis.Redis, trained: BatchReport) -> Iterator[str]:
    with running_updater(settings, redis_conn) as group:
        yield group


def test_old_events_of_an_erased_customer_are_dropped_new_ones_count(
    api: TestClient, updater: str, settings: Settings, trained: BatchReport,
    redis_conn: redis.Redis, transactions: pd.DataFrame,
) -> None:  # fmt: skip
    customer = f"erase-me-{uuid.uuid4().hex[:10]}"
    article = str(transactions["article_id"].iloc[0])
    vector = keys.user_vector(trained.version, customer)

    def post(ts: datetime) -> str:
        event_id = f"evt-{uuid.uuid4().hex}"
        body = {"customer_id": customer, "article_id": article, "event_id": event_id,
                "ts": ts.isoformat()}  # fmt: skip
        assert api.post("/events/purchase", json=body).status_code == 202
        return event_id

    first = post(datetime.now(UTC))
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == first.encode())
    assert redis_conn.exists(vector)

    erase_customer(settings, redis_conn, customer)
    assert not redis_conn.exists(vector)

    # A message stamped before the erasure (a late or replayed one) changes nothing.
    post(datetime.now(UTC) - timedelta(minutes=1))
    assert settings.kafka_bootstrap_servers
    wait_for(
        lambda: (
            pending_events(settings.kafka_bootstrap_servers, settings.events_topic, updater) == 0
        )
    )
    assert not redis_conn.exists(vector)
    assert not redis_conn.exists(keys.history(customer))

    # The customer comes back and buys: that counts.
    back = post(datetime.now(UTC) + timedelta(seconds=1))
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
    record_erasure(own, redis_conn, "gone-customer", now)
    events = {
        "late": Event(customer_id="gone-customer", article_id="a1", ts=now - timedelta(minutes=1)),
        "back": Event(customer_id="gone-customer", article_id="a1", ts=now + timedelta(seconds=1)),
        "other": Event(customer_id="kept-customer", article_id="a1", ts=now - timedelta(minutes=1)),
    }
    producer = Producer(producer_config(bootstrap, own))
    for event in events.values():
        producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
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
    assert archived == {events["back"].event_id, events["other"].event_id}
