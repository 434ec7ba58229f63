"""`recsys bench stream`, tiny: one updater drains a filled topic and is timed (with the
EMA, then with fold-in), and freshness probes at a steady rate all see their purchase
applied."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from recsys.settings import Settings
from recsys_bench import streaming as bench

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("wrk_bench")]


def test_bench_stream_times_the_updater_and_probes_freshness(
    base_settings: Settings, tmp_path: Path, spark: SparkSession
) -> None:
    result = bench.run(
        base_settings, events=20_000, customers=400, articles=150, transactions=4_000,
        work_dir=tmp_path, freshness_rate=40, freshness_duration_s=4, spark=spark,
    )  # fmt: skip
    assert result.updater_events_per_s > 0 and result.updater_seconds > 0
    assert result.fold_in_events_per_s > 0 and result.fold_in_seconds > 0
    assert result.chosen_update is None  # the suite's settings name the EMA
    fresh = result.freshness
    assert result.freshness_rate_per_s > 0
    assert fresh["probed"] >= bench.PROBERS * 5 and fresh["timed_out"] == 0
    assert 0 < fresh["p50_ms"] <= fresh["p99_ms"] <= fresh["max_ms"]
    slowest = fresh["slowest"]
    assert slowest and slowest[0][1] == pytest.approx(fresh["max_ms"], abs=0.05)
    assert [ms for _, ms in slowest] == sorted((ms for _, ms in slowest), reverse=True)
    assert all(0 <= at <= 4 + 6 for at, _ in slowest)  # within the run (+ a probe's timeout)
    assert bench.table(result).row_count == 7
