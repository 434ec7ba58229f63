"""Content vectors: the featurizer's vocabulary, a ridge map that recovers a planted one,
the model's round trip through a version's files, both index backends keeping
`placed_by`, and a batch run that places articles nobody bought."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import qdrant_edge as qe
import redis
import scipy.sparse as sp
from deltalake import DeltaTable

from batch.content_vectors import (
    fit_content_model,
    fit_ridge,
    place_by_content,
    r_squared,
    save_content_model,
)
from batch.generate import generate
from batch.pipeline import BatchReport, run_batch
from batch.publish import write_index
from recsys import keys
from recsys.content_model import ContentModel, Featurizer, load_content_model
from recsys.hm_schema import ARTICLES_FILE, TEXT_FIELD, TRANSACTIONS_FILE
from recsys.index.base import COLLABORATIVE, CONTENT, PLACED_BY_FIELD, ItemFilter
from recsys.index.factory import open_backend
from recsys.model_layout import shard_dir
from recsys.model_store import read_manifest
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.trainer import Factors
from recsys.user_store import RedisUserStore
from recsys.vectors import decode
from support import isolated

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DIM = 8


def article(**fields: str) -> dict[str, str]:
    return {"product_group_name": "Shoes", "colour_group_name": "Black", **fields}


@pytest.fixture(scope="module")
def articles(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("content") / "hm"
    generate(out, seed=5, customers=50, articles=400, transactions=500)
    return pd.read_csv(out / ARTICLES_FILE, dtype=str)


def planted(model_rows: pd.DataFrame, seed: int = 0) -> tuple[Featurizer, np.ndarray]:
    """Vectors that are an exact linear function of the rows' features."""
    featurizer = Featurizer.fit(model_rows)
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(featurizer.width, DIM))
    return featurizer, np.asarray(featurizer.transform(model_rows) @ weights) + 0.5


# ---------------------------------------------------------------- features


def test_vocabulary_comes_from_training_rows_and_unseen_values_add_nothing() -> None:
    featurizer = Featurizer.fit([article(), article(product_group_name="Accessories")])
    assert featurizer.vocabulary["product_group_name"] == ("Accessories", "Shoes")
    assert featurizer.vocabulary["colour_group_name"] == ("Black",)
    assert featurizer.vocabulary["section_name"] == ()  # a missing column: no values

    rows = featurizer.transform(
        [
            article(),
            article(product_group_name="Swimwear", colour_group_name="Teal"),  # both unseen
            {"product_group_name": None, "article_id": "1"},  # empty and unknown fields
        ]
    ).toarray()
    assert rows.shape == (3, featurizer.width)
    assert rows[0].sum() == 2  # Shoes and Black, no text
    assert not rows[1].any() and not rows[2].any()


def test_descriptions_are_hashed_words_of_unit_norm_stable_across_calls() -> None:
    featurizer = Featurizer.fit([article()], text_buckets=64)
    words = featurizer.transform(
        [
            {TEXT_FIELD: "Soft, cosy knit. Soft!"},
            {TEXT_FIELD: "soft cosy KNIT"},
            {TEXT_FIELD: ""},
        ]
    ).toarray()
    text = words[:, -64:]
    np.testing.assert_allclose(np.linalg.norm(text[:2], axis=1), 1.0)
    np.testing.assert_array_equal(text[0], text[1])  # case and repeats do not matter
    assert np.count_nonzero(text[0]) <= 3 and not text[2].any()
    again = Featurizer.fit([article()], text_buckets=64).transform([{TEXT_FIELD: "soft cosy knit"}])
    np.testing.assert_array_equal(again.toarray()[0, -64:], text[1])


# ---------------------------------------------------------------- ridge


def test_ridge_recovers_a_planted_linear_map() -> None:
    rng = np.random.default_rng(3)
    features = sp.random(3_000, 40, density=0.2, random_state=4, format="csr")
    features.data[:] = 1.0
    weights = rng.normal(size=(40, DIM))
    intercept = rng.normal(size=DIM)
    targets = np.asarray(features @ weights) + intercept + rng.normal(0, 0.01, (3_000, DIM))
    linear = fit_ridge(features, targets, 1e-6)
    np.testing.assert_allclose(linear.weights, weights, atol=0.01)
    np.testing.assert_allclose(linear.intercept, intercept, atol=0.01)
    # A heavy penalty shrinks every prediction towards the mean.
    heavy = fit_ridge(features, targets, 100.0)
    assert np.abs(heavy.weights).mean() < 0.2 * np.abs(weights).mean()


def test_content_model_maps_unseen_articles_onto_their_planted_vectors(
    articles: pd.DataFrame,
) -> None:
    _, vectors = planted(articles)
    ids = articles["article_id"].to_numpy(dtype=object)
    # Fitted on the first 300, asked about the 100 it never saw.
    model = fit_content_model(articles, ids[:300], vectors[:300], seed=1)
    assert model.fit.validation_items == 60 and model.fit.items == 300
    assert model.fit.validation_r2 is not None and model.fit.validation_r2 > 0.95
    unseen = articles.iloc[300:]
    predicted = model.predict(unseen)
    # Values the 300 never showed carry no weight, so compare where the vocabulary covers.
    covered = np.array([_covered(model, row) for _, row in unseen.iterrows()])
    assert covered.mean() > 0.5
    truth = vectors[300:][covered]
    assert r_squared(predicted[covered], truth, vectors[:300].mean(axis=0)) > 0.999


def _covered(model: ContentModel, row: pd.Series) -> bool:
    return all(row[f] in values for f, values in model.featurizer.vocabulary.items())


def test_purchase_weights_pick_the_penalty_that_fits_bought_articles(
    articles: pd.DataFrame,
) -> None:
    """Half the articles carry signal, the rest noise and hardly any purchases: weighted,
    the held-out error follows the signal; unweighted, the noise buys a heavier penalty."""
    _, vectors = planted(articles)
    rng = np.random.default_rng(2)
    noisy = rng.random(len(articles)) < 0.5
    targets = np.where(noisy[:, None], rng.normal(0, 3, vectors.shape), vectors)
    ids = articles["article_id"].to_numpy(dtype=object)
    purchases = pd.Series(np.where(noisy, 0.01, 10.0), index=ids)
    weighted = fit_content_model(articles, ids, targets, purchases=purchases, seed=1)
    plain = fit_content_model(articles, ids, targets, seed=1)
    assert weighted.fit.weighted and not plain.fit.weighted
    assert weighted.fit.penalty < plain.fit.penalty


def test_model_round_trips_through_a_version(articles: pd.DataFrame, tmp_path: Path) -> None:
    _, vectors = planted(articles)
    ids = articles["article_id"].to_numpy(dtype=object)
    model = fit_content_model(articles, ids[:300], vectors[:300], seed=1)
    save_content_model(tmp_path, "v1", model)
    loaded = load_content_model(tmp_path, "v1")
    assert loaded is not None and loaded.fit == model.fit
    assert loaded.featurizer == model.featurizer
    rows = articles.iloc[250:].to_dict("records")  # dicts, as a catalogue upsert sends them
    np.testing.assert_array_equal(loaded.predict(rows), model.predict(articles.iloc[250:]))
    assert load_content_model(tmp_path, "v-without-one") is None


def test_placement_adds_the_unbought_articles_after_the_als_items(
    articles: pd.DataFrame,
) -> None:
    _, vectors = planted(articles)
    ids = articles["article_id"].to_numpy(dtype=object)
    factors = Factors(
        user_ids=np.array(["u"], dtype=object),
        item_ids=ids[:300],
        user_factors=np.ones((1, DIM), np.float32),
        item_factors=vectors[:300].astype(np.float32),
        params={},
        train_seconds=0.0,
    )
    model = fit_content_model(articles, factors.item_ids, factors.item_factors, seed=1)
    placement = place_by_content(factors, articles, model)
    assert list(placement.factors.item_ids) == list(ids)
    assert placement.content_placed == 100
    assert set(placement.placed_by[:300]) == {COLLABORATIVE}
    assert set(placement.placed_by[300:]) == {CONTENT}
    np.testing.assert_array_equal(placement.factors.item_factors[:300], factors.item_factors)
    assert place_by_content(factors, articles, None).content_placed == 0


# ---------------------------------------------------------------- both index backends


@pytest.mark.parametrize("backend", ["edge", "qdrant-client"])
def test_both_backends_keep_placed_by_in_the_metadata(
    backend: str, articles: pd.DataFrame, base_settings: Settings, tmp_path: Path
) -> None:
    update: dict[str, object] = {"data_dir": tmp_path}
    if backend == "qdrant-client":
        update |= {"qdrant_url": ":memory:", "qdrant_collection": f"cs_{uuid.uuid4().hex[:8]}"}
    index_backend = open_backend(base_settings.model_copy(update=update))
    rows = articles.head(20)
    ids = rows["article_id"].to_numpy(dtype=object)
    vectors = np.random.default_rng(0).normal(size=(20, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # each its own nearest
    factors = Factors(ids[:0], ids, np.zeros((0, DIM), np.float32), vectors, {}, 0.0)
    placed_by = np.array([COLLABORATIVE] * 15 + [CONTENT] * 5, dtype=object)
    metadata = rows.set_index("article_id")[["product_group_name", "product_type_name"]]
    write_index(index_backend.writer("v1", DIM), factors, metadata, lambda _n: None, placed_by)
    index = index_backend.open("v1")
    try:
        payloads = index.retrieve([str(a) for a in ids])
        assert {a: p[PLACED_BY_FIELD] for a, p in payloads.items()} == dict(
            zip(ids, placed_by, strict=True)
        )
        hit = index.search(vectors[17], 1, ItemFilter())[0]
        assert hit.article_id == ids[17] and hit.metadata[PLACED_BY_FIELD] == CONTENT
    finally:
        index.close()
        index_backend.drop("v1")


# ---------------------------------------------------------------- the batch


UNBOUGHT = 12


@pytest.fixture(scope="module")
def cold_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A small catalogue where a dozen articles that sold have lost every purchase."""
    out = tmp_path_factory.mktemp("cold") / "input"
    generate(out, seed=21, customers=400, articles=300, transactions=12_000)
    tx = pd.read_csv(out / TRANSACTIONS_FILE, dtype=str)
    removed = sorted(tx["article_id"].value_counts().index[20 : 20 + UNBOUGHT])
    tx[~tx["article_id"].isin(removed)].to_csv(out / TRANSACTIONS_FILE, index=False)
    return out, removed


@pytest.fixture(scope="module")
def cold_batch(
    settings: Settings,
    cold_input: tuple[Path, list[str]],
    spark: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, redis.Redis, BatchReport]]:
    data_dir = tmp_path_factory.mktemp("cold-batch") / "data"
    with isolated(settings, data_dir, db=11) as (own, client):
        with Steps(enabled=False) as steps:
            report = run_batch(own, cold_input[0], RedisUserStore(client), steps, spark)
        yield own, client, report


def test_batch_places_every_unbought_article_in_the_index(
    cold_batch: tuple[Settings, redis.Redis, BatchReport], cold_input: tuple[Path, list[str]]
) -> None:
    settings, client, report = cold_batch
    folder, removed = cold_input
    catalogue = pd.read_csv(folder / ARTICLES_FILE, dtype=str)
    sold = set(pd.read_csv(folder / TRANSACTIONS_FILE, dtype=str)["article_id"])
    unbought = set(catalogue["article_id"]) - sold
    assert set(removed) <= unbought
    assert report.content_placed == len(unbought) and report.items == len(catalogue)

    shard = qe.EdgeShard.load(str(shard_dir(settings.models_dir, report.version)))
    try:
        records, _ = shard.scroll(
            qe.ScrollRequest(limit=len(catalogue) + 1, with_payload=True, with_vector=True)
        )
    finally:
        shard.close()
    payloads = {r.payload["article_id"]: r.payload for r in records if r.payload}
    vectors = {r.payload["article_id"]: np.asarray(r.vector) for r in records if r.payload}
    assert set(payloads) == set(catalogue["article_id"])
    placed = {a for a, p in payloads.items() if p[PLACED_BY_FIELD] == CONTENT}
    assert placed == unbought
    assert {p[PLACED_BY_FIELD] for a, p in payloads.items() if a in sold} == {COLLABORATIVE}

    # The saved model gives the vectors the index holds, so a later upsert places alike.
    model = load_content_model(settings.models_dir, report.version)
    assert model is not None and model.fit.weighted
    rows = catalogue[catalogue["article_id"].isin(removed)]
    predicted = model.predict(rows)
    for article_id, vector in zip(rows["article_id"], predicted, strict=True):
        np.testing.assert_allclose(vectors[article_id], vector, rtol=1e-5, atol=1e-6)
        # In Redis too, so a purchase of one moves the customer's vector.
        stored = decode(client.get(keys.item_vector(report.version, article_id)))
        np.testing.assert_array_equal(stored, vector)

    manifest = read_manifest(settings.models_dir, report.version)
    assert manifest.items == len(catalogue)
    assert -1.0 < manifest.metrics["content_validation_r2"] < 1.0
    assert report.content_metrics == {
        k: v for k, v in manifest.metrics.items() if k.startswith("content_")
    }
    gold = DeltaTable(str(settings.lake_dir / "gold" / "item_factors")).to_pandas()
    assert set(gold.loc[gold[PLACED_BY_FIELD] == CONTENT, "article_id"]) == unbought


def test_content_placement_can_be_turned_off(
    settings: Settings,
    cold_input: tuple[Path, list[str]],
    spark: SparkSession,
    tmp_path: Path,
) -> None:
    off = settings.model_copy(
        update={"content_placement": False, "evaluate_before_promotion": False}
    )
    with isolated(off, tmp_path / "data", db=12) as (own, client), Steps(enabled=False) as steps:
        report = run_batch(own, cold_input[0], RedisUserStore(client), steps, spark)
        assert report.content_placed == 0 and report.content_metrics == {}
        assert load_content_model(own.models_dir, report.version) is None
        sold = pd.read_csv(cold_input[0] / TRANSACTIONS_FILE, dtype=str)["article_id"].nunique()
        assert report.items == sold
