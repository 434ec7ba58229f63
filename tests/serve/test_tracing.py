"""The span tree of a request, collected with the OpenTelemetry SDK's in-memory exporter,
and the trace context travelling on the Kafka message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from batch.pipeline import BatchReport
from recsys.settings import Settings
from serve.app import create_app


@pytest.fixture(scope="module")
def traced(
    settings: Settings, trained: BatchReport
) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    with TestClient(create_app(settings, span_exporter=exporter)) as api:
        yield api, exporter


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    assert parent.context is not None
    return [
        s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def test_a_recommendation_is_one_span_with_its_parts_beneath(
    traced: tuple[TestClient, InMemorySpanExporter], known_customer: str
) -> None:
    api, exporter = traced
    exporter.clear()
    params = {"explain": "true", "k": 5, "diversity_lambda": 0.8}
    response = api.get(f"/recommend/{known_customer}", params=params)
    assert response.status_code == 200
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "GET /recommend/{customer_id}"]
    assert root.parent is None
    assert root.attributes is not None and root.attributes["http.response.status_code"] == 200
    # diversity_lambda below 1: the index query is MMR.
    assert _children(spans, root) == ["redis.load_customer", "index.mmr", "explain"]
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    exporter.clear()
    api.get(f"/recommend/{known_customer}")
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "GET /recommend/{customer_id}"]
    assert _children(spans, root) == ["redis.load_customer", "index.search"]


def test_the_trace_travels_on_the_kafka_message(
    traced: tuple[TestClient, InMemorySpanExporter],
    settings: Settings,
    transactions: pd.DataFrame,
    known_customer: str,
) -> None:
    api, exporter = traced
    exporter.clear()
    event_id = f"evt-trace-{uuid.uuid4().hex[:8]}"
    body = {"customer_id": known_customer, "article_id": str(transactions["article_id"].iloc[0]),
            "event_id": event_id}  # fmt: skip
    assert api.post("/events/purchase", json=body).status_code == 202
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "POST /events/purchase"]
    assert _children(spans, root) == ["kafka.produce"]
    assert root.context is not None
    trace_id = f"{root.context.trace_id:032x}"

    assert settings.kafka_bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-trace-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.events_topic])
    headers: dict[str, bytes] = {}
    try:
        for _ in range(60):
            for message in consumer.consume(100, 0.5):
                if message.error() is None and event_id.encode() in (message.value() or b""):
                    headers = {k: v for k, v in message.headers() or [] if v is not None}
            if headers:
                break
    finally:
        consumer.close()
    assert "traceparent" in headers, "no trace context on the message"
    assert headers["traceparent"].decode().split("-")[1] == trace_id


def test_a_request_with_a_traceparent_continues_the_callers_trace(
    traced: tuple[TestClient, InMemorySpanExporter], known_customer: str
) -> None:
    api, exporter = traced
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    exporter.clear()
    response = api.get(
        f"/recommend/{known_customer}",
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01", "tracestate": "shop=1"},
    )
    assert response.status_code == 200
    spans = list(exporter.get_finished_spans())
    (root,) = [s for s in spans if s.name == "GET /recommend/{customer_id}"]
    # The request span hangs under the caller's span, and every span is of its trace.
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.span_id:016x}" == caller_span
    assert {f"{s.context.trace_id:032x}" for s in spans if s.context} == {trace_id}
    assert root.context is not None and root.context.trace_state.get("shop") == "1"
    assert _children(spans, root) == ["redis.load_customer", "index.search"]

    # A malformed traceparent is ignored: the request starts a trace of its own.
    exporter.clear()
    api.get(f"/recommend/{known_customer}", headers={"traceparent": f"00-{trace_id}-zz-01"})
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "GET /recommend/{customer_id}"]
    assert root.parent is None and root.context is not None
    assert f"{root.context.trace_id:032x}" != trace_id

    # The caller's sampling decision holds: a trace it does not record, neither do we.
    exporter.clear()
    unsampled = {"traceparent": f"00-{trace_id}-{caller_span}-00"}
    assert api.get(f"/recommend/{known_customer}", headers=unsampled).status_code == 200
    assert list(exporter.get_finished_spans()) == []
