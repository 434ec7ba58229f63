"""The run file: which embedded engines are live for a data dir (address, pid, owner).

An address may carry the engine's per-run password (the embedded Valkey's does): the run
directory is 0700 and its files 0600, so only this user finds and reaches the engines."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from recsys.engines.process import pid_alive, private_dir

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
        private_dir(self.run_dir)
        lock_fd = os.open(self.run_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(lock_fd, "w") as handle:
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
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a killed writer, perhaps with other modes
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({k: asdict(v) for k, v in entries.items()}, indent=2))
        tmp.replace(self.path)
