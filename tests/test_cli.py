"""The two commands a new user runs, end to end, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import engine_pids


@pytest.mark.slow
def test_demo_once_shows_changed_recommendations_and_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "160"}
    for var in ("RECSYS_REDIS_URL", "RECSYS_KAFKA_BOOTSTRAP_SERVERS", "RECSYS_QDRANT_URL"):
        env.pop(var, None)
    before = engine_pids()
    result = subprocess.run(
        [sys.executable, "-m", "recsys", "demo", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "recommendations before" in out and "recommendations after" in out
    assert "items changed" in out
    assert engine_pids() - before == set(), "the demo left an engine running"


def test_bad_input_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "recsys", "batch", "--input", str(tmp_path / "nope")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "input folder not found" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
