"""The two commands a new user runs, end to end, as a user runs them."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsys.api_keys import ApiKey, digest
from recsys.engines.process import recsys_command
from support import engine_pids, wait_for


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no engines configured: everything embedded."""
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), "COLUMNS": "160", **extra}
    for var in ("RECSYS_REDIS_URL", "RECSYS_KAFKA_BOOTSTRAP_SERVERS", "RECSYS_QDRANT_URL"):
        env.pop(var, None)
    return env


def _recsys(
    *args: str, data_dir: Path, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        recsys_command(*args),
        env=_env(data_dir, **extra),
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_demo_once_shows_changed_recommendations_and_leaves_nothing(tmp_path: Path) -> None:
    before = engine_pids()
    result = _recsys("demo", "--once", data_dir=tmp_path / "data", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "recommendations before" in out and "recommendations after" in out
    assert "items changed" in out
    assert engine_pids() - before == set(), "the demo left an engine running"


def _batch(input_dir: Path, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return _recsys("batch", "--input", str(input_dir), data_dir=data_dir, timeout=300, **env)


@pytest.fixture
def trained_data_dir(tmp_path: Path, input_dir: Path) -> Path:
    """A data dir with a live model, made by `recsys batch` as a user would."""
    data_dir = tmp_path / "data"
    result = _batch(input_dir, data_dir, RECSYS_IMPLICIT_FACTORS="16")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "is live" in result.stdout
    assert "online update: " in result.stdout  # RECSYS_ONLINE_UPDATE=auto, the default
    return data_dir


def test_a_batch_past_a_spark_limit_says_which_step_and_setting(
    tmp_path: Path, input_dir: Path
) -> None:
    """A result limit far below the data: the run stops in one line naming the step, the
    limit and the setting that moves it; nothing goes live."""
    data_dir = tmp_path / "data"
    result = _batch(input_dir, data_dir, RECSYS_SPARK_CONF='{"spark.driver.maxResultSize": "1k"}')
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    error = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stdout[-2000:]
    assert "step '" in error[0] and "spark.driver.maxResultSize" in error[0]
    assert "RECSYS_SPARK_CONF" in error[0] and "no version was made live" in error[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "is live" not in result.stdout


def test_bad_input_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _recsys("batch", "--input", str(tmp_path / "nope"), data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "input folder not found" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_up_runs_the_stack_until_interrupted_and_stops_everything(
    tmp_path: Path, trained_data_dir: Path
) -> None:
    import signal
    import threading
    import time

    import httpx
    import psutil

    from recsys.engines.process import free_port

    port = free_port()
    env = _env(trained_data_dir, RECSYS_API_PORT=str(port))
    before = engine_pids()
    up = subprocess.Popen(
        recsys_command("up"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and up.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).json()
                if ready.get("status") == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready["status"] == "ready", ready
        # On loopback it prints the page's address with a read key minted for the run.
        printed: list[str] = []
        out = up.stdout
        assert out is not None
        threading.Thread(target=lambda: printed.extend(iter(out.readline, "")),
                         daemon=True).start()  # fmt: skip
        wait_for(lambda: any("#key=" in line for line in printed), timeout=30)
        key = next(line for line in printed if "#key=" in line).split("#key=")[1].split()[0]
        customers = f"http://127.0.0.1:{port}/ui/customers"
        assert httpx.get(customers, timeout=5).status_code == 401
        keyed = httpx.get(customers, headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert keyed.status_code == 200, keyed.text
        family = psutil.Process(up.pid).children(recursive=True)
        assert len(family) >= 4  # valkey, tansu, api, updater
        up.send_signal(signal.SIGINT)
        up.wait(60)
        assert up.returncode == 0
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, f"left behind: {alive}"
        assert engine_pids() - before == set()
    finally:
        if up.poll() is None:
            up.kill()


def test_generate_writes_the_three_files(tmp_path: Path) -> None:
    out = tmp_path / "hm"
    args = ("--customers", "30", "--articles", "40", "--transactions", "300")
    result = _recsys("generate", "--out", str(out), *args, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "articles.csv",
        "customers.csv",
        "transactions_train.csv",
    ]
    assert "wrote 300 transactions" in result.stdout


def test_generate_refuses_impossible_sizes_in_one_line(tmp_path: Path) -> None:
    result = _recsys("generate", "--out", str(tmp_path), "--articles", "1", data_dir=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_keys_new_expires_prints_an_entry_with_the_expiry(tmp_path: Path) -> None:
    result = _recsys("keys", "new", "--name", "shop", "--role", "events",
                     "--expires", "2030-01-01T12:00:00+02:00", data_dir=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    key_line, entry_line = result.stdout.splitlines()
    key = key_line.removeprefix("key (shown once): ")
    entry = ApiKey.model_validate_json(entry_line.removeprefix("RECSYS_API_KEYS entry: "))
    assert entry.sha256 == digest(key) and entry.role == "events"
    assert entry.expires == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert '"expires": "2030-01-01T10:00:00Z"' in entry_line
    # A date alone is its midnight, UTC; a scraper's key is a role of its own.
    scraper = _recsys("keys", "new", "--name", "prom", "--role", "metrics",
                      "--expires", "2031-06-30", data_dir=tmp_path)  # fmt: skip
    assert '"role": "metrics"' in scraper.stdout
    assert '"expires": "2031-06-30T00:00:00Z"' in scraper.stdout
    for bad, said in (("2001-01-01", "is in the past"), ("soon", "ISO 8601")):
        refused = _recsys("keys", "new", "--name", "shop", "--role", "events",
                          "--expires", bad, data_dir=tmp_path)  # fmt: skip
        assert refused.returncode == 2 and said in refused.stdout, refused.stdout
        assert "Traceback" not in refused.stdout + refused.stderr and "rsk_" not in refused.stdout
