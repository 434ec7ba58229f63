"""`recsys bench train` runs end to end on a tiny matrix and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from recsys.engines.process import recsys_command

pytestmark = pytest.mark.spark


def test_bench_train_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    env = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "160"}
    result = subprocess.run(
        recsys_command("bench", "train", "--ml100k", str(tmp_path / "none"),
         "--transactions", "2000", "--rank", "4", "--iterations", "2", "--json", str(out)),
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Spark / implicit" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["machine"]["cores"] >= 1
    (row,) = payload["rows"]
    assert row["dataset"] == "generated 2,000 tx"
    assert row["implicit_s"] > 0 and row["spark_s"] > 0
