"""GET /recommend/{customer_id} against the real index and Redis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.vectors import decode


def test_known_customer_gets_personalized_items_without_past_purchases(
    api: TestClient, known_customer: str, transactions: pd.DataFrame, trained: BatchReport
) -> None:
    response = api.get(f"/recommend/{known_customer}", params={"k": 10})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "personalized"
    assert body["model_version"] == trained.version
    ids = [item["article_id"] for item in body["items"]]
    assert len(ids) == 10 == len(set(ids))
    bought = set(transactions.loc[transactions["customer_id"] == known_customer, "article_id"])
    assert not bought & set(ids)
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["items"][0]["metadata"]["product_group_name"]


def test_scores_are_the_dot_products_of_the_stored_vectors(
    api: TestClient, known_customer: str, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    body = api.get(f"/recommend/{known_customer}", params={"k": 5}).json()
    user = decode(redis_conn.get(keys.user_vector(trained.version, known_customer)))
    assert user is not None
    for item in body["items"]:
        vector = decode(redis_conn.get(keys.item_vector(trained.version, item["article_id"])))
        assert vector is not None
        assert item["score"] == pytest.approx(float(np.dot(user, vector)), rel=1e-4, abs=1e-5)


def test_unknown_customer_gets_trending(api: TestClient) -> None:
    body = api.get("/recommend/nobody-we-know", params={"k": 7}).json()
    assert body["source"] == "trending"
    assert body["fallback_reason"] == "unknown_customer"
    assert len(body["items"]) == 7


@pytest.mark.parametrize("k", ["0", "51", "abc", "-3"])
def test_bad_k_is_a_422_naming_it(api: TestClient, known_customer: str, k: str) -> None:
    response = api.get(f"/recommend/{known_customer}", params={"k": k})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


def test_overlong_customer_id_is_a_422(api: TestClient) -> None:
    response = api.get(f"/recommend/{'a' * 129}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "customer_id"]
