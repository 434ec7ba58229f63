"""/items/{id}/similar, /popular, /users/{id}/profile, /models and /metrics against the
real index, Redis and model artefact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import BaseModel

from batch.pipeline import BatchReport
from recsys import keys
from recsys.model_store import read_manifest
from recsys.settings import Settings
from recsys.vectors import decode
from serve.schemas import Popular, Recommendations, SimilarItems
from serve.telemetry import DIVERSITY_SAMPLE_EVERY
from support import counter


def _ids(body: dict[str, object]) -> list[str]:
    return [i["article_id"] for i in body["items"]]  # type: ignore[attr-defined]


def test_similar_items_are_the_nearest_vectors_but_never_the_item_itself(
    api: TestClient, transactions: pd.DataFrame, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    article = str(transactions["article_id"].value_counts().index[0])
    body = api.get(f"/items/{article}/similar", params={"k": 8}).json()
    assert body["article_id"] == article and body["model_version"] == trained.version
    ids = _ids(body)
    assert len(ids) == 8 and article not in ids
    anchor = decode(redis_conn.get(keys.item_vector(trained.version, article)))
    assert anchor is not None
    for item in body["items"]:
        vector = decode(redis_conn.get(keys.item_vector(trained.version, item["article_id"])))
        assert item["score"] == pytest.approx(float(np.dot(anchor, vector)), rel=1e-4, abs=1e-5)
    group = body["items"][0]["metadata"]["product_group_name"]
    filtered = api.get(f"/items/{article}/similar", params={"k": 5, "product_group": group})
    assert {i["metadata"]["product_group_name"] for i in filtered.json()["items"]} == {group}
    excluded = api.get(f"/items/{article}/similar", params={"exclude_ids": ",".join(ids[:3])})
    assert not set(ids[:3]) & set(_ids(excluded.json()))


def test_similar_items_of_an_unknown_article_is_a_404(api: TestClient) -> None:
    response = api.get("/items/0000000000/similar")
    assert response.status_code == 404
    assert "unknown article_id" in response.json()["detail"]
    assert api.get("/items/bad id!/similar").status_code == 422


def test_popular_is_trending_with_the_same_filters(api: TestClient, trained: BatchReport) -> None:
    body = api.get("/popular", params={"k": 15}).json()
    assert body["source"] == "trending" and body["model_version"] == trained.version
    assert len(body["items"]) == 15
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    group = body["items"][0]["metadata"]["product_group_name"]
    only = api.get("/popular", params={"k": 5, "product_group": group}).json()
    assert {i["metadata"]["product_group_name"] for i in only["items"]} == {group}
    assert api.get("/popular", params={"k": 0}).status_code == 422


def test_profile_counts_recent_purchases_and_category_shares(
    api: TestClient, known_customer: str, transactions: pd.DataFrame, trained: BatchReport
) -> None:
    mine = transactions[transactions["customer_id"] == known_customer]
    body = api.get(
        f"/users/{known_customer}/profile", params={"recent_limit": 3, "top_categories": 2}
    ).json()
    assert body["model_version"] == trained.version
    assert body["total_purchases"] == len(mine)
    assert body["first_purchase"].startswith(str(mine["t_dat"].min())[:10])
    assert body["last_purchase"].startswith(str(mine["t_dat"].max())[:10])
    recent = body["recent_purchases"]
    assert len(recent) == 3
    assert [r["purchased_at"] for r in recent] == sorted(
        (r["purchased_at"] for r in recent), reverse=True
    )
    assert all(r["metadata"]["product_group_name"] for r in recent)
    for key in ("top_product_groups", "top_product_types"):
        shares = body[key]
        assert 1 <= len(shares) <= 2
        assert shares[0]["count"] >= shares[-1]["count"]
        assert all(0 < s["percent"] <= 100 for s in shares)
    distinct = mine["article_id"].nunique()
    assert str(distinct) in body["categories_basis"]


def test_profile_of_an_unknown_customer_is_a_404_and_bad_limits_422(api: TestClient) -> None:
    assert api.get("/users/nobody-we-know/profile").status_code == 404
    for params in ({"recent_limit": 0}, {"recent_limit": 51}, {"top_categories": 11}):
        response = api.get("/users/someone/profile", params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "query"


def test_models_describes_the_live_version(
    api: TestClient, settings: Settings, trained: BatchReport
) -> None:
    body = api.get("/models").json()
    manifest = read_manifest(settings.models_dir, trained.version)
    assert body["version"] == trained.version
    assert body["trainer"] == manifest.trainer == "implicit"
    assert body["params"]["factors"] == settings.implicit_factors
    assert body["data_version"]["silver.interactions"] >= 0
    assert body["metrics"]["holdout_ndcg_at_10"] > 0
    # The version is served with the beams the batch chose for it.
    assert manifest.index is not None
    assert body["index"]["beams"] == dataclasses.asdict(manifest.index.beams)
    served = api.app.state.recsys.model.current  # type: ignore[attr-defined]
    assert served.index.beams == manifest.index.beams


def test_metrics_count_what_the_requests_did(api: TestClient, known_customer: str) -> None:
    api.get(
        f"/recommend/{known_customer}",
        params={"explain": "true", "product_group": "Garment Upper body", "exclude_ids": "x1"},
    )
    api.get("/recommend/nobody-we-know")
    api.get(f"/users/{known_customer}/profile")
    text = api.get("/metrics").text
    for needle in (
        'recommendation_requests_total{source="personalized"}',
        'recommendation_fallback_total{reason="unknown_customer"}',
        "recommendation_diversity_score_bucket",
        'filter_applied_total{type="product_group"}',
        'filter_applied_total{type="exclude_ids"}',
        "items_excluded_history_total",
        "items_excluded_explicit_total",
        "explain_requests_total",
        "explain_computation_duration_seconds_bucket",
        "mmr_rerank_applied_total",
        "mmr_rerank_duration_seconds_bucket",
        "user_profile_requests_total",
        'redis_operation_duration_seconds_bucket{le="0.0001",operation="load_customer"}',
        "qdrant_search_duration_seconds_bucket",
        "qdrant_retrieve_duration_seconds_bucket",
        'http_request_duration_seconds_count{method="GET",route="/recommend/{customer_id}"',
    ):
        assert needle in text, needle
    assert "nobody-we-know" not in text  # ids never become labels


def test_the_diversity_score_is_measured_on_one_list_in_so_many(
    api: TestClient, known_customer: str
) -> None:
    name = "recommendation_diversity_score_count"
    before = counter(api.get("/metrics").text, name)
    for _ in range(DIVERSITY_SAMPLE_EVERY):
        api.get(f"/recommend/{known_customer}", params={"diversity_lambda": "0.7"})
    assert counter(api.get("/metrics").text, name) - before == 1


def test_item_list_bodies_are_exactly_their_documented_models(
    api: TestClient, known_customer: str, transactions: pd.DataFrame
) -> None:
    """The item lists are encoded from dicts (the hot path skips response validation):
    each body must be what its declared response model would have produced."""
    article = str(transactions["article_id"].value_counts().index[0])
    cases: list[tuple[str, dict[str, object], type[BaseModel]]] = [
        (f"/recommend/{known_customer}", {"k": 5}, Recommendations),
        (f"/recommend/{known_customer}", {"k": 5, "explain": "true"}, Recommendations),
        (f"/recommend/{known_customer}", {"k": 5, "diversity_lambda": 0.5}, Recommendations),
        ("/recommend/nobody-we-know", {"k": 3}, Recommendations),
        (f"/items/{article}/similar", {"k": 4}, SimilarItems),
        ("/popular", {"k": 4}, Popular),
    ]
    for path, params, model in cases:
        response = api.get(path, params=params)  # type: ignore[arg-type]
        assert response.status_code == 200 and response.headers["content-type"] == (
            "application/json"
        )
        body = response.json()
        assert model.model_validate(body).model_dump(mode="json") == body, path
