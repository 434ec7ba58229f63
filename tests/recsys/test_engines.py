"""The embedded engines: started on loopback, shared through the run file, persistent
where they should be, and never outliving the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from recsys.engines.embedded import EmbeddedEngines
from recsys.engines.process import pid_alive
from recsys.engines.runfile import RunFile
from recsys.engines.valkey import start_valkey
from recsys.settings import Settings


def _settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]


def test_valkey_keeps_data_across_restarts(tmp_path: Path) -> None:
    proc, url = start_valkey(tmp_path, timeout=20)
    try:
        client = redis.Redis.from_url(url)
        client.set("k", b"v")
        client.close()
    finally:
        proc.stop()
    assert not proc.alive()
    proc, url = start_valkey(tmp_path, timeout=20)
    try:
        assert redis.Redis.from_url(url).get("k") == b"v"
    finally:
        proc.stop()


def test_second_command_reuses_the_engines_of_the_first(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with EmbeddedEngines(settings, {"redis", "kafka"}) as first:
        assert first.owned == {"redis", "kafka"}
        entries = RunFile(settings.run_dir).read()
        assert entries["redis"].address == first.redis_url
        assert entries["kafka"].owner_pid == os.getpid()
        with EmbeddedEngines(settings, {"redis", "kafka"}) as second:
            assert second.owned == set()
            assert (second.redis_url, second.kafka_bootstrap) == (
                first.redis_url,
                first.kafka_bootstrap,
            )
        pids = [entries["redis"].pid, entries["kafka"].pid]
    assert not any(pid_alive(p) for p in pids)
    assert RunFile(settings.run_dir).read() == {}


def test_configured_urls_start_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path).model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "kafka_bootstrap_servers": "127.0.0.1:1"}
    )
    with EmbeddedEngines(settings, {"redis", "kafka"}) as found:
        assert found.owned == set()
        assert found.redis_url == "redis://127.0.0.1:1/0"


_OWNER = """
import sys, time
from pathlib import Path
from recsys.engines.embedded import EmbeddedEngines
from recsys.settings import Settings
engines = EmbeddedEngines(Settings(_env_file=None, data_dir=Path(sys.argv[1])), {"redis", "kafka"})
engines.__enter__()
print("up", flush=True)
time.sleep(600)
"""


def test_engines_die_with_a_killed_owner(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "up"
        children = psutil.Process(owner.pid).children()
        assert len(children) == 2
        owner.send_signal(signal.SIGKILL)  # no cleanup code runs: only the kernel can help
        owner.wait(10)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left behind: {alive}"
    finally:
        if owner.poll() is None:
            owner.kill()


def test_engine_that_cannot_start_says_why(tmp_path: Path) -> None:
    from recsys.engines.process import EngineStartError

    blocker, url = start_valkey(tmp_path / "a", timeout=20)
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        started = time.monotonic()
        with pytest.raises(EngineStartError, match="valkey-server"):
            start_valkey(tmp_path / "b", timeout=20, port=port)
        assert time.monotonic() - started < 20
    finally:
        blocker.stop()
