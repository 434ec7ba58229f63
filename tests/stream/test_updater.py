"""A purchase (or a view, click, add-to-cart) posted over HTTP moves the customer's vector
in Redis, through the real broker and the real updater, exactly once; poison messages go
to the dead-letter topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.bus import pending_events, producer_config
from recsys.ema import ema_update
from recsys.events import event_weights
from recsys.settings import Settings
from recsys.vectors import decode
from support import running_updater, wait_for


@pytest.fixture(scope="module")
def updater(settings: Settings, redis_conn: redis.Redis, trained: BatchReport) -> Iterator[str]:
    with running_updater(settings, redis_conn) as group:
        yield group


def _customer_with_history(transactions: pd.DataFrame, rank: int) -> str:
    return str(transactions["customer_id"].value_counts().index[rank])


def test_purchase_over_http_moves_the_vector_once(
    api: TestClient,
    updater: str,
    settings: Settings,
    trained: BatchReport,
    redis_conn: redis.Redis,
    transactions: pd.DataFrame,
) -> None:
    customer = _customer_with_history(transactions, 3)
    bought = set(transactions.loc[transactions["customer_id"] == customer, "article_id"])
    article = next(a for a in transactions["article_id"].unique() if a not in bought)
    user_key = keys.user_vector(trained.version, customer)
    before = decode(redis_conn.get(user_key))
    item = decode(redis_conn.get(keys.item_vector(trained.version, article)))
    assert before is not None and item is not None

    event_id = f"evt-{uuid.uuid4().hex}"
    body = {"customer_id": customer, "article_id": article, "event_id": event_id}
    assert api.post("/events/purchase", json=body).status_code == 202
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == event_id.encode())

    after = decode(redis_conn.get(user_key))
    expected = ema_update(before, item, settings.ema_rate, 1.0)
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    assert redis_conn.zscore(keys.history(customer), article) is not None

    # The same event again (a client retry) and its duplicate delivery change nothing.
    assert api.post("/events/purchase", json=body).status_code == 202
    assert settings.kafka_bootstrap_servers
    wait_for(
        lambda: (
            pending_events(settings.kafka_bootstrap_servers, settings.events_topic, updater) == 0
        )
    )
    np.testing.assert_array_equal(decode(redis_conn.get(user_key)), after)

    # And the API now answers with the purchase applied and the item excluded.
    rec = api.get(f"/recommend/{customer}").json()
    assert rec["applied_event_id"] == event_id
    assert article not in {i["article_id"] for i in rec["items"]}


def test_first_purchase_gives_a_new_customer_a_vector(
    api: TestClient,
    updater: str,
    trained: BatchReport,
    redis_conn: redis.Redis,
    transactions: pd.DataFrame,
) -> None:
    customer = f"new-{uuid.uuid4().hex[:12]}"
    article = str(transactions["article_id"].iloc[5])
    assert api.get(f"/recommend/{customer}").json()["source"] == "trending"
    event_id = f"evt-{uuid.uuid4().hex}"
    body = {"customer_id": customer, "article_id": article, "event_id": event_id}
    assert api.post("/events/purchase", json=body).status_code == 202
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == event_id.encode())
    vector = decode(redis_conn.get(keys.user_vector(trained.version, customer)))
    item = decode(redis_conn.get(keys.item_vector(trained.version, article)))
    assert vector is not None and item is not None
    cos = float(vector @ item / (np.linalg.norm(vector) * np.linalg.norm(item)))
    assert cos == pytest.approx(1.0, abs=1e-5)
    rec = api.get(f"/recommend/{customer}").json()
    assert rec["source"] == "personalized"
    assert article not in {i["article_id"] for i in rec["items"]}


def test_poison_message_is_dead_lettered_with_reason(updater: str, settings: Settings) -> None:
    assert settings.kafka_bootstrap_servers
    marker = uuid.uuid4().hex.encode()
    producer = Producer(producer_config(settings.kafka_bootstrap_servers, settings))
    producer.produce(
        settings.events_topic, key=b"poison", value=b'{"not": "an event", "m": "' + marker + b'"}'
    )
    assert producer.flush(10) == 0

    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"dlq-reader-{marker.decode()[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    reader.subscribe([settings.dlq_topic])
    found = None
    try:
        deadline = time.monotonic() + 40
        while found is None and time.monotonic() < deadline:
            for message in reader.consume(100, 0.5):
                if message.error() is None and marker in (message.value() or b""):
                    found = message
    finally:
        reader.close()
    assert found is not None, "the poison message never reached the dead-letter topic"
    headers = dict(found.headers() or [])
    assert b"customer_id" in headers["reason"]
    # The consumer went on: nothing of the events topic is left behind for its group.
    wait_for(
        lambda: (
            pending_events(settings.kafka_bootstrap_servers, settings.events_topic, updater) == 0
        )
    )


def test_weaker_signals_over_http_move_the_vector_by_their_weights_once(
    api: TestClient,
    updater: str,
    settings: Settings,
    trained: BatchReport,
    redis_conn: redis.Redis,
    transactions: pd.DataFrame,
) -> None:
    assert settings.kafka_bootstrap_servers
    customer = _customer_with_history(transactions, 5)
    bought = set(transactions.loc[transactions["customer_id"] == customer, "article_id"])
    articles = [a for a in transactions["article_id"].unique() if a not in bought][:3]
    # Whatever the suite sent this customer before is applied first.
    wait_for(
        lambda: (
            pending_events(settings.kafka_bootstrap_servers, settings.events_topic, updater) == 0
        )
    )
    user_key = keys.user_vector(trained.version, customer)
    before = decode(redis_conn.get(user_key))
    assert before is not None
    history = redis_conn.zrange(keys.history(customer), 0, -1)
    profile = redis_conn.hgetall(keys.profile(trained.version, customer))

    weights = event_weights(settings)
    expected = before
    bodies = []
    for event_type, article in zip(("view", "click", "add_to_cart"), articles, strict=True):
        body = {"customer_id": customer, "article_id": article,
                "event_id": f"evt-{event_type}-{uuid.uuid4().hex}"}  # fmt: skip
        assert api.post(f"/events/{event_type}", json=body).status_code == 202
        bodies.append((event_type, body))
        item = decode(redis_conn.get(keys.item_vector(trained.version, article)))
        assert item is not None
        expected = ema_update(expected, item, settings.ema_rate, 1.0, weights[event_type])
    last_id = bodies[-1][1]["event_id"]
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == last_id.encode())
    after = decode(redis_conn.get(user_key))
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    # Not history: nothing excluded because of them, no purchase counted.
    assert redis_conn.zrange(keys.history(customer), 0, -1) == history
    assert redis_conn.hgetall(keys.profile(trained.version, customer)) == profile

    # Retried by the client: applied once.
    for event_type, body in bodies:
        assert api.post(f"/events/{event_type}", json=body).status_code == 202
    wait_for(
        lambda: (
            pending_events(settings.kafka_bootstrap_servers, settings.events_topic, updater) == 0
        )
    )
    np.testing.assert_array_equal(decode(redis_conn.get(user_key)), after)
    assert api.get(f"/recommend/{customer}").json()["applied_event_id"] == last_id
