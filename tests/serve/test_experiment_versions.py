"""An experiment arm pinned to an older model version: its customers are answered by that
version (its index and its user vectors), the others by the live one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession

from batch.pipeline import BatchReport, run_batch
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from serve.app import create_app
from support import isolated


@pytest.fixture(scope="module")
def two_versions(
    settings: Settings, input_dir: Path, spark: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, BatchReport, BatchReport]]:  # fmt: skip
    with isolated(settings, tmp_path_factory.mktemp("pinned") / "data", db=12) as (own, client):
        with Steps(enabled=False) as steps:
            older = run_batch(own, input_dir, RedisUserStore(client), steps, spark)
            live = run_batch(own, input_dir, RedisUserStore(client), steps, spark, force=True)
        assert older.version != live.version
        yield own, older, live


def test_a_pinned_arm_is_served_by_its_version(
    two_versions: tuple[Settings, BatchReport, BatchReport], transactions: pd.DataFrame,
    tmp_path: Path,
) -> None:  # fmt: skip
    own, older, live = two_versions
    path = tmp_path / "experiments.json"
    variants = [
        {"name": "live", "share": 0.5},
        {"name": "older", "share": 0.5, "model_version": older.version},
    ]
    path.write_text(json.dumps({"experiments": [{"name": "pinned", "variants": variants}]}))
    seen: dict[str, set[str]] = {"live": set(), "older": set()}
    with TestClient(create_app(own.model_copy(update={"experiments_file": path}))) as api:
        for customer in transactions["customer_id"].value_counts().index[:30]:
            body = api.get(f"/recommend/{customer}", params={"k": 5}).json()
            assert body["source"] == "personalized"
            seen[body["variant"]].add(body["model_version"])
    assert seen == {"live": {live.version}, "older": {older.version}}


def test_a_pinned_version_that_cannot_load_falls_back_to_live(
    two_versions: tuple[Settings, BatchReport, BatchReport], known_customer: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    own, _, live = two_versions
    path = tmp_path / "experiments.json"
    variants = [{"name": "a", "share": 0.5, "model_version": "v-gone"},
                {"name": "b", "share": 0.5, "model_version": "v-gone"}]  # fmt: skip
    path.write_text(json.dumps({"experiments": [{"name": "gone", "variants": variants}]}))
    with TestClient(create_app(own.model_copy(update={"experiments_file": path}))) as api:
        body = api.get(f"/recommend/{known_customer}").json()
    assert body["model_version"] == live.version
