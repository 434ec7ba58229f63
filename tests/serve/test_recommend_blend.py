"""GET /recommend for a customer who has bought little: their vector blended with
trending (recsys.blend) on the real index and Redis, the same list as the blend of the
whole catalogue; the vector alone past RECSYS_BLEND_MAX_PURCHASES, at weight 0 and with
MMR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.blend import blend_scores
from recsys.hm_schema import ARTICLES_FILE
from recsys.model_store import read_trending
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from recsys.vectors import decode
from serve.app import create_app

K = 8


def _catalogue(
    redis_conn: redis.Redis, version: str, input_dir: Path
) -> tuple[list[str], np.ndarray, pd.Series]:
    """Every article with a vector in the version, its vectors and product groups."""
    articles = pd.read_csv(input_dir / ARTICLES_FILE, dtype=str, keep_default_na=False)
    ids, vectors = [], []
    for article_id in articles["article_id"]:
        raw = redis_conn.get(keys.item_vector(version, article_id))
        if raw is not None:
            ids.append(article_id)
            vectors.append(decode(raw))
    groups = articles.set_index("article_id")["product_group_name"]
    return ids, np.stack(vectors), groups


def _customer(redis_conn: redis.Redis, version: str, name: str, bought: list[str],
              vector: np.ndarray) -> str:  # fmt: skip
    store = RedisUserStore(redis_conn)
    store.write_vectors(version, "user", [name], vector[None, :].astype(np.float32))
    store.write_histories([(name, {a: 1_700_000_000 + i for i, a in enumerate(bought)})], 200)
    return name


@pytest.mark.parametrize("source", ["overall", "group"])
def test_a_one_purchase_customer_gets_the_blend_of_the_whole_catalogue(
    settings: Settings,
    trained: BatchReport,
    redis_conn: redis.Redis,
    input_dir: Path,
    source: str,
) -> None:
    ids, vectors, groups = _catalogue(redis_conn, trained.version, input_dir)
    bought = ids[17]
    customer = _customer(redis_conn, trained.version, f"blend-one-{source}", [bought],
                         vectors[17] * 1.5)  # fmt: skip
    own = settings.model_copy(update={"blend_trending_weight": 0.4, "blend_trending": source})
    with TestClient(create_app(own)) as client:
        body = client.get(f"/recommend/{customer}", params={"k": K}).json()
    assert body["source"] == "personalized"
    assert body["trending_weight"] == 0.4

    lists = read_trending(own.models_dir, trained.version)
    personal = vectors @ (vectors[17] * 1.5)
    trending = np.array([lists.score(a) for a in ids])
    if source == "group":
        trending = np.where(groups.reindex(ids).to_numpy() == groups[bought], trending, 0.0)
    personal[17] = -np.inf  # bought: never recommended back
    expected = blend_scores(personal, trending, 0.4)
    order = np.argsort(-expected, kind="stable")[:K]
    assert [item["article_id"] for item in body["items"]] == [ids[i] for i in order]
    assert [item["score"] for item in body["items"]] == pytest.approx(expected[order], rel=1e-4)
    vector_alone = [ids[i] for i in np.argsort(-personal, kind="stable")[:K]]
    assert [item["article_id"] for item in body["items"]] != vector_alone


def test_the_vector_ranks_alone_past_the_purchases_at_weight_0_and_with_mmr(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis, input_dir: Path
) -> None:
    ids, vectors, _ = _catalogue(redis_conn, trained.version, input_dir)
    vector = vectors[5] + vectors[9]
    three = _customer(redis_conn, trained.version, "blend-three", ids[5:8], vector)
    one = _customer(redis_conn, trained.version, "blend-alone", ids[5:6], vector)
    off = settings.model_copy(update={"blend_trending_weight": 0.0})
    on = settings.model_copy(update={"blend_trending_weight": 0.5, "blend_max_purchases": 2})
    with TestClient(create_app(on)) as client:
        past = client.get(f"/recommend/{three}", params={"k": K}).json()
        mmr = client.get(f"/recommend/{one}", params={"k": K, "diversity_lambda": 0.7}).json()
        blended = client.get(f"/recommend/{one}", params={"k": K}).json()
    with TestClient(create_app(off)) as client:
        alone = client.get(f"/recommend/{one}", params={"k": K}).json()
    assert blended["trending_weight"] == 0.5
    for body in (past, mmr, alone):
        assert body["source"] == "personalized" and body["trending_weight"] is None
    scores = {item["article_id"]: item["score"] for item in alone["items"]}
    for article_id, score in scores.items():
        assert score == pytest.approx(float(vectors[ids.index(article_id)] @ vector), rel=1e-4)
