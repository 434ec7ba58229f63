"""`recsys batch` output in Delta, Redis and the Qdrant Edge shard, and its input errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import qdrant_edge as qe
import redis
from deltalake import DeltaTable

from batch.ingest import InputError, check_input, clean, load_bronze
from batch.lake import DeltaRsLake
from batch.pipeline import BatchReport
from recsys import keys
from recsys.hm_schema import ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE
from recsys.index.base import ItemFilter
from recsys.index.beams import BEAM_CHOICES
from recsys.model_layout import shard_dir
from recsys.model_store import read_factors, read_manifest, read_trending
from recsys.settings import Settings
from recsys.vectors import decode

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_delta_tables_hold_the_input(
    settings: Settings, trained: BatchReport, input_dir: Path
) -> None:
    tx = pd.read_csv(input_dir / TRANSACTIONS_FILE, dtype={"article_id": str})
    bronze = DeltaTable(str(settings.lake_dir / "bronze" / "transactions")).to_pandas()
    assert len(bronze) == len(tx)
    assert bronze["article_id"].str.len().eq(10).all()  # the leading zero survived
    interactions = DeltaTable(str(settings.lake_dir / "silver" / "interactions")).to_pandas()
    assert len(interactions) == trained.interactions
    assert not interactions.duplicated(["customer_id", "article_id"]).any()
    days = pd.to_datetime(tx.drop_duplicates(["customer_id", "article_id", "t_dat"])["t_dat"])
    age = (days.max() - days).dt.days.to_numpy()
    expected = np.exp2(-age / settings.interaction_half_life_days).sum()
    assert interactions["weight"].sum() == pytest.approx(expected, rel=1e-4)
    assert set(trained.data_version) >= {"bronze.transactions", "silver.interactions"}
    silver = DeltaTable(str(settings.lake_dir / "silver" / "transactions")).to_pandas()
    assert len(silver) == len(tx) and set(silver["source"]) == {"csv"}
    for gold in ("trending", "item_factors", "user_factors"):
        table = DeltaTable(str(settings.lake_dir / "gold" / gold)).to_pandas()
        assert len(table) > 0 and f"gold.{gold}" in trained.data_version
    items = DeltaTable(str(settings.lake_dir / "gold" / "item_factors")).to_pandas()
    assert len(items) == trained.items and set(items["model_version"]) == {trained.version}
    assert len(items["factors"].iloc[0]) == settings.implicit_factors


def test_redis_holds_versioned_vectors_and_history(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis, input_dir: Path
) -> None:
    assert redis_conn.get(keys.LIVE_VERSION) == trained.version.encode()
    tx = pd.read_csv(input_dir / TRANSACTIONS_FILE, dtype={"article_id": str})
    customer = tx["customer_id"].value_counts().index[0]
    vector = decode(redis_conn.get(keys.user_vector(trained.version, customer)))
    assert vector is not None and vector.shape == (settings.implicit_factors,)
    item = decode(redis_conn.get(keys.item_vector(trained.version, tx["article_id"].iloc[0])))
    assert item is not None and np.isfinite(item).all()
    history = {a.decode() for a in redis_conn.zrange(keys.history(customer), 0, -1)}
    assert history == set(tx.loc[tx["customer_id"] == customer, "article_id"])
    # The history expires after the retention unless the next run or an event rewrites it.
    # (The suite's batch ran a while ago: count down from when it wrote the manifest.)
    ttl = settings.customer_state_ttl_s
    written = read_manifest(settings.models_dir, trained.version).created_at
    since = (datetime.now(UTC) - written).total_seconds()
    assert ttl > 0 and ttl - since - 120 < redis_conn.ttl(keys.history(customer)) <= ttl


def test_index_shard_has_every_trained_item_with_payload(
    settings: Settings, trained: BatchReport
) -> None:
    manifest = read_manifest(settings.models_dir, trained.version)
    assert manifest.items == trained.items and manifest.dim == settings.implicit_factors
    # The beams were chosen on this index: the last tried of each shape is the one kept,
    # and it reached the target (or is the widest).
    assert manifest.index is not None and manifest.index.target == settings.index_recall_target
    for shape in ("unfiltered", "filtered"):
        last = [t for t in manifest.index.trials if t.shape == shape][-1]
        assert last.beam == getattr(manifest.index.beams, shape)
        assert last.worst >= manifest.index.target or last.beam == BEAM_CHOICES[-1]
    shard = qe.EdgeShard.load(str(shard_dir(settings.models_dir, trained.version)))
    try:
        assert shard.info().points_count == trained.items
        schema = shard.info().payload_schema
        assert {"article_id", "product_group_name", "product_type_name"} <= set(schema)
        point = shard.scroll(qe.ScrollRequest(limit=1, with_payload=True))[0][0]
        assert point.payload and point.payload["product_group_name"]
    finally:
        shard.close()


def test_factors_and_id_maps_are_in_the_artefact(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    factors = read_factors(settings.models_dir, trained.version)
    assert factors["user_factors"].shape == (trained.users, settings.implicit_factors)
    assert factors["item_ids"].shape == (trained.items,)
    article = str(factors["item_ids"][0])
    stored = decode(redis_conn.get(keys.item_vector(trained.version, article)))
    np.testing.assert_array_equal(stored, factors["item_factors"][0])


def test_trending_is_in_the_artefact(settings: Settings, trained: BatchReport) -> None:
    top = read_trending(settings.models_dir, trained.version)
    assert len(top.overall) > 10
    scores = [t["score"] for t in top.overall]
    assert scores == sorted(scores, reverse=True)
    groups = top.by_segment["product_group_name"]
    assert len(groups) >= 3
    for group, entries in groups.items():
        assert all(e["metadata"]["product_group_name"] == group for e in entries)
    # A filter on one group is answered from that group's own list, in full.
    rare = min(groups, key=lambda g: len(groups[g]))
    picked = top.top(5, ItemFilter(product_groups=[rare]))
    assert len(picked) == min(5, len(groups[rare]))
    assert {p.metadata["product_group_name"] for p in picked} == {rare}
    excluded = top.top(10, ItemFilter(exclude_groups=[rare], exclude_ids=[picked[0].article_id]))
    assert all(p.metadata["product_group_name"] != rare for p in excluded)


def _copy_input(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_missing_file_is_named(input_dir: Path, tmp_path: Path) -> None:
    folder = _copy_input(input_dir, tmp_path / "in")
    (folder / CUSTOMERS_FILE).unlink()
    with pytest.raises(InputError, match=r"missing input file: .*customers\.csv"):
        check_input(folder)


def test_missing_column_is_named(input_dir: Path, tmp_path: Path) -> None:
    folder = _copy_input(input_dir, tmp_path / "in")
    tx = pd.read_csv(folder / TRANSACTIONS_FILE, dtype=str).drop(columns=["price"])
    tx.to_csv(folder / TRANSACTIONS_FILE, index=False)
    with pytest.raises(InputError, match=r"transactions_train\.csv: missing column.*price"):
        check_input(folder)


def test_bad_rows_are_counted_and_skipped(
    input_dir: Path, tmp_path: Path, spark: SparkSession
) -> None:
    folder = _copy_input(input_dir, tmp_path / "in")
    tx = pd.read_csv(folder / TRANSACTIONS_FILE, dtype=str)
    bad = tx.head(6).copy()
    bad.loc[bad.index[0], "t_dat"] = "2020-13-45"
    bad.loc[bad.index[1], "article_id"] = "0999999999"
    bad.loc[bad.index[2], "price"] = "-0.01"
    bad.loc[bad.index[3], "price"] = "abc"
    bad.loc[bad.index[4], "customer_id"] = "not a valid id!"
    bad.loc[bad.index[5], "customer_id"] = "f" * 64
    pd.concat([tx, bad]).to_csv(folder / TRANSACTIONS_FILE, index=False)
    articles = pd.read_csv(folder / ARTICLES_FILE, dtype=str)
    # Free text as the real file has it: commas, quotes, even a line break.
    articles.loc[articles.index[1], "detail_desc"] = 'Soft, "cosy" knit.\nHand wash'
    pd.concat([articles, articles.head(2)]).to_csv(folder / ARTICLES_FILE, index=False)

    store = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    bronze = load_bronze(store, folder)
    assert bronze["transactions"].rows == len(tx) + 6  # bronze holds the rows as read
    cleaned = clean(store)
    reports = {r.name: r for r in cleaned.reports}
    report = reports["transactions"]
    assert report.rows_in == len(tx) + 6
    assert dict(report.skipped) == {
        "unparseable t_dat": 1,
        "unknown article_id": 1,
        "negative or missing price": 2,
        "invalid customer_id": 1,
        "unknown customer_id": 1,
    }
    assert cleaned.transactions.count() == len(tx)
    assert dict(reports["articles"].skipped) == {"duplicate article_id": 2}
    assert cleaned.articles.count() == len(articles)
    # The first of two rows with one id is the one kept.
    kept = cleaned.articles.where(f"article_id = '{articles['article_id'].iloc[0]}'").first()
    assert kept is not None and kept["prod_name"] == articles["prod_name"].iloc[0]
    second = cleaned.articles.where(f"article_id = '{articles['article_id'].iloc[1]}'").first()
    assert second is not None and second["detail_desc"] == 'Soft, "cosy" knit.\nHand wash'


def test_rewriting_a_table_is_idempotent_and_old_files_go(
    input_dir: Path, tmp_path: Path, spark: SparkSession
) -> None:
    store = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    first = load_bronze(store, input_dir)["transactions"]
    second = load_bronze(store, input_dir)["transactions"]
    assert (first.version, second.version) == (0, 1)
    assert first.rows == second.rows
    folder = tmp_path / "lake" / "bronze" / "transactions"
    table = DeltaTable(str(folder))
    assert len(table.to_pandas()) == second.rows
    # With no retention, the files the overwrite replaced are vacuumed at once.
    on_disk = {p.relative_to(folder) for p in folder.rglob("*.parquet")}
    active = {Path(u.removeprefix("file://")).relative_to(folder) for u in table.file_uris()}
    assert on_disk == active
    assert len(on_disk) >= 1
