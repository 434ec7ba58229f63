"""A dependency down or hanging mid-run: flagged fallbacks or 503s within the timeout,
never a hang or a 500, and readiness says which part is down."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport, run_batch
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from serve.app import create_app
from support import TcpProxy, isolated

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="module")
def proxied(settings: Settings, trained: BatchReport) -> Iterator[tuple[TestClient, TcpProxy]]:
    """The API reaching Redis through a proxy the test can break."""
    assert settings.redis_url
    target = urlparse(settings.redis_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 6379))
    own = settings.model_copy(
        update={"redis_url": proxy.url_for(settings.redis_url), "redis_timeout_s": 0.3}
    )
    try:
        with TestClient(create_app(own)) as api:
            yield api, proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_redis_down_or_hanging_gives_flagged_trending_in_time(
    proxied: tuple[TestClient, TcpProxy], known_customer: str, mode: str
) -> None:
    api, proxy = proxied
    assert api.get(f"/recommend/{known_customer}").json()["source"] == "personalized"
    proxy.set_mode(mode)
    try:
        started = time.perf_counter()
        response = api.get(f"/recommend/{known_customer}", params={"k": 5, "product_type": "x"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        body = response.json()
        assert body["source"] == "trending"
        assert body["fallback_reason"] == "redis_unavailable"
        assert elapsed < 2.0, elapsed  # the 0.3 s Redis timeout, not a hang
        profile = api.get(f"/users/{known_customer}/profile")
        assert profile.status_code == 503
        ready = api.get("/health/ready")
        assert ready.status_code == 200  # trending still serves: degraded, not unavailable
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"].startswith("down")
        assert "redis_unavailable" in api.get("/metrics").text
    finally:
        proxy.set_mode("forward")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if api.get(f"/recommend/{known_customer}").json()["source"] == "personalized":
            break
    else:
        pytest.fail("personalised results did not come back after Redis did")


def test_index_gone_gives_flagged_trending_and_degraded_readiness(
    settings: Settings, input_dir: Path, spark: SparkSession, tmp_path: Path, known_customer: str
) -> None:
    """A Qdrant server (qdrant-client's local mode) losing the served collection mid-run."""
    from recsys.index.qdrant_server import QdrantServerBackend, client_for

    with isolated(settings, tmp_path / "data", db=7) as (own, client):
        own = own.model_copy(
            update={"qdrant_url": ":memory:", "qdrant_collection": f"gone_{uuid.uuid4().hex[:8]}"}
        )
        with Steps(enabled=False) as steps:
            report = run_batch(own, input_dir, RedisUserStore(client), steps, spark)
        with TestClient(create_app(own)) as api:
            assert api.get(f"/recommend/{known_customer}").json()["source"] == "personalized"
            QdrantServerBackend(client_for(own), own.qdrant_collection).drop(report.version)
            body = api.get(f"/recommend/{known_customer}", params={"k": 5}).json()
            assert (body["source"], body["fallback_reason"]) == ("trending", "index_unavailable")
            assert len(body["items"]) == 5
            ready = api.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["index"].startswith("down")
