"""POST /events/purchase and /events/{view,click,add_to_cart}: validated, published to
the real broker, acknowledged."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from confluent_kafka import Consumer, Message
from fastapi.testclient import TestClient
from pydantic import ValidationError

from batch.pipeline import BatchReport
from recsys.bus import ensure_topics
from recsys.engines.tansu import start_tansu
from recsys.events import Event
from recsys.settings import Settings
from serve.app import create_app


def test_purchase_is_published_keyed_by_customer(
    api: TestClient, settings: Settings, transactions: pd.DataFrame, known_customer: str
) -> None:
    article = str(transactions["article_id"].iloc[0])
    response = api.post(
        "/events/purchase",
        json={"customer_id": known_customer, "article_id": article, "event_id": "evt-publish-1"},
    )
    assert response.status_code == 202
    assert response.json() == {"event_id": "evt-publish-1", "status": "accepted"}

    found = _published(settings, {"evt-publish-1"}).get("evt-publish-1")
    assert found is not None, "the acknowledged event is not on the topic"
    assert found.key() == known_customer.encode()
    event = Event.from_bytes(found.value() or b"")
    assert (event.event_type, event.customer_id, event.article_id) == (
        "purchase",
        known_customer,
        article,
    )
    assert event.schema_version == 1


def _published(settings: Settings, event_ids: set[str]) -> dict[str, Message]:
    """The messages of the events topic with these event ids, read from its beginning."""
    assert settings.kafka_bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-events-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([settings.events_topic])
    found: dict[str, Message] = {}
    try:
        for _ in range(60):
            for message in consumer.consume(500, 0.5):
                if message.error() is not None:
                    continue
                try:
                    event = Event.from_bytes(message.value() or b"")
                except ValidationError:  # another test's poison message
                    continue
                if event.event_id in event_ids:
                    found[event.event_id] = message
            if len(found) == len(event_ids):
                break
    finally:
        consumer.close()
    return found


def test_event_id_is_generated_when_absent(api: TestClient, transactions: pd.DataFrame) -> None:
    article = str(transactions["article_id"].iloc[1])
    response = api.post("/events/purchase", json={"customer_id": "c1", "article_id": article})
    assert response.status_code == 202
    assert len(response.json()["event_id"]) >= 16


def test_unknown_article_is_a_422(api: TestClient) -> None:
    response = api.post("/events/purchase", json={"customer_id": "c1", "article_id": "0999999999"})
    assert response.status_code == 422
    assert "unknown article_id" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"customer_id": "c1"},
        {"customer_id": "c1", "article_id": ""},
        {"customer_id": "c 1", "article_id": "0108775015"},
        {"customer_id": "c1", "article_id": "0108775015", "price": -1},
        {"customer_id": "c1", "article_id": "0108775015", "surprise": 1},
    ],
)
def test_malformed_bodies_are_422(api: TestClient, body: dict[str, object]) -> None:
    assert api.post("/events/purchase", json=body).status_code == 422


def test_invalid_json_is_a_422(api: TestClient) -> None:
    response = api.post(
        "/events/purchase", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_broker_down_is_a_503(
    settings: Settings, trained: BatchReport, transactions: pd.DataFrame, tmp_path: object
) -> None:
    broker, bootstrap = start_tansu(settings.run_dir / "test-broker", timeout=20)
    try:
        own = settings.model_copy(
            update={"kafka_bootstrap_servers": bootstrap, "kafka_produce_timeout_s": 2.0}
        )
        ensure_topics(bootstrap, own)
        article = str(transactions["article_id"].iloc[0])
        with TestClient(create_app(own)) as client:
            ok = client.post("/events/purchase", json={"customer_id": "c2", "article_id": article})
            assert ok.status_code == 202
            broker.stop()
            down = client.post(
                "/events/purchase", json={"customer_id": "c2", "article_id": article}
            )
            assert down.status_code == 503
            assert "retry with the same event_id" in down.json()["detail"]
            ready = client.get("/health/ready").json()
            assert ready["status"] == "degraded"
            assert ready["checks"]["kafka"].startswith("down")
    finally:
        broker.stop()


# ---------------------------------------------------------------- weaker signals


def test_weaker_signals_are_published_with_their_type(
    api: TestClient, settings: Settings, transactions: pd.DataFrame, known_customer: str
) -> None:
    article = str(transactions["article_id"].iloc[2])
    sent = {}
    for event_type in ("view", "click", "add_to_cart"):
        event_id = f"evt-{event_type}-{uuid.uuid4().hex[:8]}"
        body = {"customer_id": known_customer, "article_id": article, "event_id": event_id}
        if event_type == "click":  # optional on every type
            body["recommendation_id"] = "rec-1"
        response = api.post(f"/events/{event_type}", json=body)
        assert response.status_code == 202, response.text
        assert response.json() == {"event_id": event_id, "status": "accepted"}
        sent[event_id] = event_type

    messages = _published(settings, set(sent))
    assert all(m.key() == known_customer.encode() for m in messages.values())
    found = {i: Event.from_bytes(m.value() or b"") for i, m in messages.items()}
    assert {i: e.event_type for i, e in found.items()} == sent
    assert all(not e.is_purchase and e.article_id == article for e in found.values())
    assert [e.recommendation_id for e in found.values() if e.event_type == "click"] == ["rec-1"]


def test_a_retried_signal_is_accepted_again_under_its_id(
    api: TestClient, transactions: pd.DataFrame
) -> None:
    # Accepting it twice is safe: every consumer is idempotent per event_id
    # (tests/stream/test_event_types.py, tests/stream/test_updater.py).
    body = {"customer_id": "c1", "article_id": str(transactions["article_id"].iloc[0]),
            "event_id": "evt-retried-view"}  # fmt: skip
    first = api.post("/events/view", json=body)
    again = api.post("/events/view", json=body)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"event_id": "evt-retried-view", "status": "accepted"}


@pytest.mark.parametrize("event_type", ["wishlist", "Purchase", "views", "add-to-cart"])
def test_unknown_event_type_is_a_422(
    api: TestClient, transactions: pd.DataFrame, event_type: str
) -> None:
    body = {"customer_id": "c1", "article_id": str(transactions["article_id"].iloc[0])}
    response = api.post(f"/events/{event_type}", json=body)
    assert response.status_code == 422
    assert "event_type" in response.text


@pytest.mark.parametrize("event_type", ["view", "click", "add_to_cart"])
def test_unknown_article_or_bad_body_on_a_signal_is_a_422(api: TestClient, event_type: str) -> None:
    unknown = api.post(
        f"/events/{event_type}", json={"customer_id": "c1", "article_id": "0999999999"}
    )
    assert unknown.status_code == 422
    assert "unknown article_id" in unknown.json()["detail"]
    assert api.post(f"/events/{event_type}", json={"customer_id": "c1"}).status_code == 422


def test_the_signal_route_is_documented_beside_the_purchase_route(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert "post" in paths["/events/purchase"]
    signal = paths["/events/{event_type}"]["post"]
    (param,) = [p for p in signal["parameters"] if p["name"] == "event_type"]
    assert set(param["schema"]["enum"]) == {"view", "click", "add_to_cart"}
