"""The delta-spark writer, chosen by RECSYS_LAKE_WRITER: it runs the same jobs where its
jars can be fetched, and says clearly why it cannot where they cannot (no Maven here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
from deltalake import DeltaTable

from recsys.engines.process import recsys_command
from recsys.settings import Settings

pytestmark = pytest.mark.spark

HAS_DELTA_SPARK = importlib.util.find_spec("delta") is not None


@pytest.mark.skipif(HAS_DELTA_SPARK, reason="delta-spark is installed here")
def test_choosing_delta_spark_without_the_package_says_how_to_get_it(
    base_settings: Settings,
) -> None:
    from recsys.spark import SparkUnavailableError, spark_session

    chosen = base_settings.model_copy(update={"lake_writer": "delta-spark"})
    with (
        pytest.raises(SparkUnavailableError, match="uv sync --extra delta-spark"),
        spark_session(chosen),
    ):
        pass


@pytest.mark.skipif(
    not HAS_DELTA_SPARK, reason="delta-spark is not installed (uv sync --extra delta-spark)"
)
def test_batch_writes_its_tables_with_delta_spark(
    settings: Settings, input_dir: Path, tmp_path: Path
) -> None:
    """Its own process: delta-spark's jars must be on the JVM from its start."""
    assert settings.redis_url
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(tmp_path / "data"),
        "RECSYS_REDIS_URL": settings.redis_url.rsplit("/", 1)[0] + "/5",
        "RECSYS_LAKE_WRITER": "delta-spark",
        "RECSYS_SPARK_MASTER": "local[2]",
        "RECSYS_SPARK_DRIVER_MEMORY": "1g",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        recsys_command("batch", "--input", str(input_dir)),
        env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if "jars could not be fetched" in result.stdout + result.stderr:
        reason = next(
            line for line in (result.stdout + result.stderr).splitlines() if "jars could" in line
        )
        pytest.skip(reason.strip())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lake = tmp_path / "data" / "lake"
    for table in ("bronze/transactions", "silver/interactions", "gold/trending"):
        assert len(DeltaTable(str(lake / table)).to_pandas()) > 0, table
