"""Helpers shared by tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import psutil

from recsys.engines.tansu import tansu_binary
from recsys.engines.valkey import valkey_binary


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
