"""`recsys bench serve`, tiny: every variant answers 2xx under wrk, each ratio is to the
bare endpoint measured right before it, the floors (bare plus the index search) answer,
and the recall check runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from recsys.settings import Settings
from recsys_bench import serving as bench

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("wrk_bench")]


def test_bench_serve_measures_each_variant_against_the_bare_endpoint(
    base_settings: Settings, tmp_path: Path, spark: SparkSession
) -> None:
    result = bench.run(
        base_settings.model_copy(update={"api_workers": 1}),
        articles=300, customers=300, transactions=5_000, duration_s=1, connections=4,
        work_dir=tmp_path, spark=spark,
    )  # fmt: skip
    # The sampled customers with one or two purchases get the blend's own row.
    assert result.blend_customers > 0
    assert [v.name for v in result.variants] == ["bare endpoint", *bench.VARIANTS, bench.BLEND]
    bare, *variants = result.variants
    for v in variants:
        assert v.bare_max_rps is not None and v.bare_max_rps > 0
        assert v.ratio_to_bare == pytest.approx(v.max_rps / v.bare_max_rps)
        assert v.target_ratio == bench.TARGETS.get(v.name)
    # The floors: the bare endpoint plus the index search, each against its own bare run.
    assert [f.name for f in result.floors] == list(bench.FLOORS)
    for f in result.floors:
        assert f.max_rps > 0 and f.bare_max_rps is not None and f.bare_max_rps > 0
        assert f.ratio_to_bare == pytest.approx(f.max_rps / f.bare_max_rps)
        assert f.target_ratio is None
    yardsticks = [v.bare_max_rps or 0 for v in (*variants, *result.floors)]
    assert bare.max_rps == pytest.approx(sum(yardsticks) / len(yardsticks))
    for v in (*result.variants, *result.floors):
        assert v.max_rps > 0 and v.half_load_rps > 0
        assert 0 < v.p50_ms <= v.p99_ms
    # 300 items are below the HNSW threshold: the served search scans them, exactly.
    assert result.ann_recall_at_10 is not None
    assert result.ann_recall_at_10.unfiltered == 1.0
    assert result.ann_recall_at_10.filtered_min == 1.0
    assert bench.table(result).row_count == 6 + len(bench.FLOORS)
