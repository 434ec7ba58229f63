"""POST /events/purchase: validated, published to the real broker, acknowledged."""

from __future__ import annotations

import pandas as pd
import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys.engines.tansu import start_tansu
from recsys.events import Event
from recsys.settings import Settings
from serve.app import create_app
from stream.bus import ensure_topics


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

    assert settings.kafka_bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "test-events-reader",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([settings.events_topic])
    found = None
    try:
        for _ in range(60):
            for message in consumer.consume(100, 0.5):
                if message.error() is None and b"evt-publish-1" in (message.value() or b""):
                    found = message
            if found is not None:
                break
    finally:
        consumer.close()
    assert found is not None, "the acknowledged event is not on the topic"
    assert found.key() == known_customer.encode()
    event = Event.from_bytes(found.value() or b"")
    assert (event.event_type, event.customer_id, event.article_id) == (
        "purchase",
        known_customer,
        article,
    )
    assert event.schema_version == 1


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
