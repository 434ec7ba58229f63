"""`recsys bench batch --shape`, tiny: the same code path as the real shape (generate,
batch, Valkey memory, /recommend under wrk, the updater), on a shape registered for the
test, and every figure it reports is there and plausible."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from recsys.settings import Settings
from recsys_bench import shape as bench_scale

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("wrk_bench")]


def test_a_shape_runs_end_to_end_and_reports_every_figure(
    base_settings: Settings, tmp_path: Path, spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bench_scale.SHAPES, "tiny", bench_scale.Shape(400, 300, 6_000))
    result = bench_scale.run_shape(
        base_settings, "tiny", tmp_path, spark, serve_s=1, connections=4, updater_events=20_000
    )
    assert (result.customers, result.articles, result.transactions) == (400, 300, 6_000)
    assert result.users > 300 and result.items > 100 and result.interactions > 1_000
    assert "evaluate on a holdout" in result.steps and result.batch_s > 0
    assert result.holdout["holdout_ndcg_at_10"] > 0
    batch = result.peak_mib["batch"]
    assert batch["python driver"] > 50 and batch["spark JVM"] > 100 and batch["valkey"] > 1
    assert set(result.lake_mib) == {"bronze", "silver", "gold"}
    assert all(v > 0 for v in result.lake_mib.values()) and result.index_mib > 0
    valkey = result.valkey
    assert valkey["vector_bytes_mean"] > 32 and valkey["history_bytes_mean"] > 32
    assert valkey["used_memory_mib"] > 0 and valkey["keys"] > result.users
    assert result.valkey_after_updates["used_memory_mib"] > valkey["used_memory_mib"]
    assert 0 < result.recommend["p50_ms"] <= result.recommend["p99_ms"]
    assert result.recommend["max_rps"] > 0 and result.updater_events_per_s > 0
    restart = result.valkey_restart_s
    assert restart is not None and 0 < restart < base_settings.engine_start_timeout_s
    assert result.valkey_restart_keys == valkey_after_keys(result)
    assert set(result.erasure_s) == {"total", "redis", "delta", "vacuum", "factors"}
    assert result.erasure_s["total"] > 0
    assert bench_scale.table([result]).row_count > 20
    assert bench_scale.p99_ratio([result]) is None


def valkey_after_keys(result: bench_scale.ShapeResult) -> int:
    return int(result.valkey_after_updates["keys"])
