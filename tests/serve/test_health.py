"""Liveness and readiness with every engine up."""

from __future__ import annotations

from fastapi.testclient import TestClient

from batch.pipeline import BatchReport


def test_live(api: TestClient) -> None:
    assert api.get("/health/live").json() == {"status": "live"}


def test_ready_reports_every_part(api: TestClient, trained: BatchReport) -> None:
    response = api.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["model_version"] == trained.version
    assert body["checks"] == {"redis": "ok", "index": "ok", "kafka": "ok"}
