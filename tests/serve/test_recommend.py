"""GET /recommend/{customer_id} against the real index and Redis."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.settings import Settings
from recsys.vectors import decode
from serve.app import create_app


def test_known_customer_gets_personalized_items_without_past_purchases(
    api: TestClient, known_customer: str, transactions: pd.DataFrame, trained: BatchReport
) -> None:
    response = api.get(f"/recommend/{known_customer}", params={"k": 10, "diversity_lambda": 1})
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


def test_purchases_may_come_back_when_the_settings_allow_it(
    settings: Settings, trained: BatchReport, known_customer: str, redis_conn: redis.Redis
) -> None:
    history = {a.decode() for a in redis_conn.zrange(keys.history(known_customer), 0, -1)}
    allowed = settings.model_copy(update={"exclude_purchased": False})
    with TestClient(create_app(allowed)) as client:
        body = client.get(f"/recommend/{known_customer}", params={"k": 50}).json()
    assert body["source"] == "personalized"
    assert history & set(_ids(body)), "50 of the nearest items and none bought before"


def test_scores_are_the_dot_products_of_the_stored_vectors(
    api: TestClient, known_customer: str, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    body = api.get(f"/recommend/{known_customer}", params={"k": 5}).json()
    assert body["diversity_lambda"] == 1.0  # the default, from the settings
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


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["article_id"] for item in body["items"]]


@pytest.mark.parametrize("who", ["known", "unknown"])
def test_filters_run_for_personal_and_trending_results(
    api: TestClient, known_customer: str, who: str
) -> None:
    customer = known_customer if who == "known" else "nobody-we-know"
    source = "personalized" if who == "known" else "trending"
    base = api.get(f"/recommend/{customer}", params={"k": 50}).json()
    groups = [i["metadata"]["product_group_name"] for i in base["items"]]
    group = max(set(groups), key=groups.count)
    only = api.get(f"/recommend/{customer}", params={"k": 10, "product_group": group}).json()
    assert only["source"] == source
    assert len(only["items"]) == 10
    assert {i["metadata"]["product_group_name"] for i in only["items"]} == {group}
    kind = base["items"][0]["metadata"]["product_type_name"]
    without = api.get(
        f"/recommend/{customer}",
        params={
            "k": 20,
            "exclude_groups": f"{group}, Nothing Like It",
            "exclude_types": kind,
            "exclude_ids": ",".join(_ids(base)[:5]),
        },
    ).json()
    assert without["source"] == source
    assert len(without["items"]) == 20
    for item in without["items"]:
        assert item["metadata"]["product_group_name"] != group
        assert item["metadata"]["product_type_name"] != kind
    assert not set(_ids(base)[:5]) & set(_ids(without))


def test_explanations_name_recent_purchases_with_shares_summing_to_100(
    api: TestClient, known_customer: str, redis_conn: redis.Redis
) -> None:
    body = api.get(
        f"/recommend/{known_customer}", params={"k": 5, "explain": "true", "explain_top_k": 2}
    ).json()
    recent = {a.decode() for a in redis_conn.zrevrange(keys.history(known_customer), 0, 19)}
    for item in body["items"]:
        explanation = item["explanation"]
        assert 1 <= len(explanation) <= 2
        assert {e["article_id"] for e in explanation} <= recent
        shares = [e["share_percent"] for e in explanation]
        assert all(s >= 0 for s in shares) and sum(shares) == pytest.approx(100.0)
        sims = [e["similarity"] for e in explanation]
        assert sims == sorted(sims, reverse=True) and all(-1.0 <= x <= 1.0 + 1e-6 for x in sims)
    plain = api.get(f"/recommend/{known_customer}", params={"k": 5}).json()
    assert all(item["explanation"] is None for item in plain["items"])


def _diversity(redis_conn: redis.Redis, version: str, ids: list[str]) -> float:
    vectors = np.stack([decode(redis_conn.get(keys.item_vector(version, a))) for a in ids])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    return 1.0 - float((sims.sum() - np.trace(sims)) / (len(ids) * (len(ids) - 1)))


def test_mmr_changes_the_list_even_at_k_50_and_diversifies_it(
    api: TestClient, known_customer: str, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    def ask(lam: float) -> list[str]:
        params = {"k": 50, "diversity_lambda": lam}
        body = api.get(f"/recommend/{known_customer}", params=params).json()
        assert body["diversity_lambda"] == lam and len(body["items"]) == 50
        return _ids(body)

    relevant, diverse = ask(1.0), ask(0.3)
    assert set(relevant) != set(diverse)
    assert _diversity(redis_conn, trained.version, diverse) > _diversity(
        redis_conn, trained.version, relevant
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("diversity_lambda", "2"),
        ("diversity_lambda", "-0.1"),
        ("explain_top_k", "0"),
        ("explain_top_k", "11"),
        ("explain", "perhaps"),
        ("exclude_ids", "ok,not valid!"),
        ("exclude_ids", ",".join(f"a{i}" for i in range(101))),
        ("product_group", "x" * 129),
    ],
)
def test_bad_parameters_are_a_422_naming_them(
    api: TestClient, known_customer: str, name: str, value: str
) -> None:
    response = api.get(f"/recommend/{known_customer}", params={name: value})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", name]
