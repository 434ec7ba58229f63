"""The run file: which embedded engines are live for a data dir (address, pid, owner)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from recsys.engines.process import pid_alive

RUN_FILE = "engines.json"
LOCK_FILE = "engines.lock"


@dataclass(frozen=True)
class EngineEntry:
    address: str
    pid: int
    owner_pid: int


class RunFile:
    """Read and write `<data dir>/run/engines.json` under an exclusive file lock."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / RUN_FILE

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while a command resolves or starts engines, so two never start one each."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / LOCK_FILE).open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> dict[str, EngineEntry]:
        try:
            raw = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {name: EngineEntry(**entry) for name, entry in raw.items()}

    def live(self, name: str) -> EngineEntry | None:
        entry = self.read().get(name)
        if entry is None or not pid_alive(entry.pid) or not pid_alive(entry.owner_pid):
            return None
        return entry

    def put(self, name: str, entry: EngineEntry) -> None:
        entries = self.read()
        entries[name] = entry
        self._write(entries)

    def remove(self, name: str, pid: int) -> None:
        entries = self.read()
        if name in entries and entries[name].pid == pid:
            del entries[name]
            self._write(entries)

    def _write(self, entries: dict[str, EngineEntry]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in entries.items()}, indent=2))
        tmp.replace(self.path)
