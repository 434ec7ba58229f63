"""The embedded engines: started on loopback, shared through the run file, persistent
where they should be, and never outliving the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from recsys.engines import process
from recsys.engines.embedded import EmbeddedEngines
from recsys.engines.process import EngineStartError, pid_alive, spawn
from recsys.engines.runfile import EngineEntry, RunFile
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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_valkey_asks_for_a_per_run_password_kept_in_a_private_run_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    old_umask = os.umask(0o022)  # a permissive umask, as most users have
    try:
        with EmbeddedEngines(settings, {"redis"}) as found:
            url = found.require_redis()
            password = urlsplit(url).password
            assert password and len(password) >= 32
            with pytest.raises(redis.AuthenticationError):
                redis.Redis.from_url(url.replace(f":{password}@", "@")).ping()
            client = redis.Redis.from_url(url)
            client.set("k", b"v")
            client.execute_command("BGREWRITEAOF")  # writes the base and the manifest
            time.sleep(1.0)
            client.close()
            entry = RunFile(settings.run_dir).read()["redis"]
            assert entry.address == url  # the next command connects with the password
            # The password reaches the server on its standard input: no process listing
            # shows it.
            assert password not in " ".join(psutil.Process(entry.pid).cmdline())
            run_dir, valkey_dir = settings.run_dir, tmp_path / "valkey"
            assert _mode(run_dir) == 0o700 and _mode(valkey_dir) == 0o700
            written = list(valkey_dir.rglob("*"))
            assert any(p.name.endswith(".aof") for p in written)
            for path in [*run_dir.iterdir(), *written]:
                assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
            with EmbeddedEngines(settings, {"redis"}) as second:
                assert second.owned == set() and second.redis_url == url
        with EmbeddedEngines(settings, {"redis"}) as again:  # a new run, a new password
            assert urlsplit(again.require_redis()).password not in (None, password)
            assert redis.Redis.from_url(again.require_redis()).get("k") == b"v"
    finally:
        os.umask(old_umask)


def test_an_existing_run_file_is_made_private(tmp_path: Path) -> None:
    run_file = RunFile(tmp_path / "run")
    (tmp_path / "run").mkdir(mode=0o755)
    run_file.path.write_text("{}")
    run_file.path.chmod(0o644)
    with run_file.locked():
        run_file.put("redis", EngineEntry(address="redis://:pw@127.0.0.1:1/0", pid=1, owner_pid=1))
    assert _mode(tmp_path / "run") == 0o700 and _mode(run_file.path) == 0o600


_REPORT_PDEATHSIG = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
sig = ctypes.c_int(-1)
assert libc.prctl(2, ctypes.byref(sig), 0, 0, 0) == 0  # PR_GET_PDEATHSIG
print(sig.value, flush=True)
"""


def _reported_pdeathsig(tmp_path: Path, name: str) -> int:
    log = tmp_path / f"{name}.log"
    proc = spawn(name, [sys.executable, "-c", _REPORT_PDEATHSIG], log_path=log)
    try:
        assert proc.popen.wait(30) == 0, proc.log_text()
    finally:
        proc.stop()
    return int(proc.log_text().strip())


def test_a_spawned_child_has_the_parent_death_signal_set(tmp_path: Path) -> None:
    # Only the process itself can read it: the child reports its own.
    assert _reported_pdeathsig(tmp_path, "pdeathsig") == signal.SIGTERM


def test_the_forked_child_looks_no_library_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child of a threaded parent must not run ldconfig (find_library does) nor load
    a library: spawn resolves prctl in the parent. Both are broken here, and a fork
    inherits that, so a lookup in the child fails the start."""
    _reported_pdeathsig(tmp_path, "warm")  # this process's first spawn resolves prctl

    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("library lookup in the forked child")

    monkeypatch.setattr(ctypes.util, "find_library", no_lookup)
    monkeypatch.setattr(ctypes, "CDLL", no_lookup)
    assert _reported_pdeathsig(tmp_path, "no-lookup") == signal.SIGTERM


def test_a_refused_parent_death_signal_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusing_prctl(*args: object) -> int:
        return -1

    monkeypatch.setattr(process, "_prctl", lambda: refusing_prctl)
    with pytest.raises(EngineStartError, match="refuse-test could not start"):
        spawn("refuse-test", [sys.executable, "-c", "print('ran')"], log_path=tmp_path / "r.log")
    assert "ran" not in (tmp_path / "r.log").read_text()
