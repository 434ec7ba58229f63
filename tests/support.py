"""Helpers shared by tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import redis

from recsys.engines.tansu import tansu_binary
from recsys.engines.valkey import valkey_binary
from recsys.settings import Settings
from recsys.stores import redis_client


def engine_processes() -> list[psutil.Process]:
    """Every live valkey-server or tansu started from this checkout's binaries."""
    binaries = {str(valkey_binary()), str(tansu_binary())}
    found = []
    for proc in psutil.process_iter(["exe", "cmdline", "status"]):
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("exe") in binaries or (cmd and cmd[0] in binaries):
            found.append(proc)
    return found


def engine_pids() -> set[int]:
    return {p.pid for p in engine_processes()}


@contextlib.contextmanager
def isolated(settings: Settings, data_dir: Path, db: int) -> Iterator[tuple[Settings, redis.Redis]]:
    """Settings with their own data dir and Redis database (emptied before and after), so
    a test can run batches and promotions while the suite's live model stays as it is."""
    assert settings.redis_url
    mine = settings.model_copy(
        update={"data_dir": data_dir, "redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{db}"}
    )
    client = redis_client(mine.redis_url or "", 10)
    client.flushdb()
    try:
        yield mine, client
    finally:
        client.flushdb()
        client.close()
