"""A child process that dies with its parent: started, awaited until ready, stopped."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before the request: then nobody would stop us.
    if os.getppid() != parent_pid:
        os._exit(1)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec hook: the child dies with its parent."""
    return lambda: die_with_parent(parent_pid)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listens_on(pid: int, port: int) -> bool:
    """Whether this very process listens on port: a port answering is not enough, another
    server may hold it."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not alive for our purposes.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return status != "Z"
    return True


class EngineStartError(RuntimeError):
    """An embedded engine did not come up; the message says which and why."""


@dataclass
class ManagedProcess:
    """A running child, with the log file it writes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    _log_start: int = 0  # the log is appended to across runs; this run starts here

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise EngineStartError(
                    f"{self.name} exited with code {self.popen.returncode} while starting"
                    f"{self._log_hint()}"
                )
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise EngineStartError(
            f"{self.name} did not answer within {timeout:.0f} s{self._log_hint()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout; always reaps the child."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        else:
            self.popen.wait(timeout=1)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        """What this run of the child has written to its log so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_start)
            return handle.read().decode(errors="replace")

    def _log_hint(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_text().strip().splitlines()[-3:]
        return f" (log {self.log_path}: {' | '.join(tail)})" if tail else ""


def recsys_command(*args: str) -> list[str]:
    """The argv of `recsys ARGS...` in this interpreter. The face package (recsys_cli)
    provides the command; it is named here, to run it, and never imported."""
    return [sys.executable, "-m", "recsys_cli", *args]


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start argv as a child that receives SIGTERM if this process dies."""
    log: IO[bytes] | None = None
    log_start = 0
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        log_start = log.tell()
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        preexec_fn=_die_with_parent(os.getpid()),
    )
    return ManagedProcess(name=name, popen=popen, log_path=log_path, _log=log, _log_start=log_start)
