"""A child process that dies with its parent: started, awaited until ready, stopped."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int]:
    """libc's prctl, resolved once in the parent. `CDLL(None)` is the running program's
    own symbol table, which has libc in it: no `find_library`, which runs `ldconfig`,
    and nothing to look up in a forked child of a threaded parent."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return cast(Callable[..., int], prctl)


class ParentDeathSignalError(OSError):
    """The kernel refused to send the child a signal when its parent dies."""


class ParentGoneError(ParentDeathSignalError):
    """The parent died before the child asked to die with it."""


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec hook: the child receives SIGTERM when its parent dies.

    Everything is resolved here, in the parent; the hook itself only calls prctl and
    getppid. A failure raises in the child, and subprocess reports it to the parent:
    a child that would outlive its parent never runs."""
    prctl = _prctl()
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        if prctl(_PR_SET_PDEATHSIG, sigterm, 0, 0, 0) != 0:
            raise ParentDeathSignalError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died before the request: then nobody would stop us.
        if os.getppid() != parent_pid:
            raise ParentGoneError(0, "the parent died before the child started")

    return hook


def die_with_parent(parent_pid: int) -> None:
    """The calling process receives SIGTERM when parent_pid dies (a server worker calls
    this as it starts); it exits at once if that parent is already gone."""
    try:
        _die_with_parent(parent_pid)()
    except ParentGoneError:
        os._exit(1)


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


def private_dir(path: Path) -> Path:
    """path, created if need be, readable by this user only (0700, whatever the umask)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _open_log(path: Path) -> IO[bytes]:
    """The log, appended to; created 0600 (a log may name customers or addresses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    private: bool = False,
    stdin_data: bytes | None = None,
) -> ManagedProcess:
    """Start argv as a child that receives SIGTERM if this process dies.

    private: the child creates its files 0600 and its directories 0700 (umask 077).
    stdin_data: written to the child's standard input, which is then closed (a secret
    passed this way shows in no process listing)."""
    log: IO[bytes] | None = None
    log_start = 0
    if log_path is not None:
        log = _open_log(log_path)
        log_start = log.tell()
    # Resolved here, in the parent: the forked child only calls what this returns.
    preexec = _die_with_parent(os.getpid())
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            umask=0o077 if private else -1,
            preexec_fn=preexec,
        )
    except subprocess.SubprocessError as exc:  # the preexec hook raised in the child
        if log is not None:
            log.close()
        raise EngineStartError(f"{name} could not start: {exc}") from exc
    if stdin_data is not None and popen.stdin is not None:
        # A child that dies before reading is reported by wait_ready, with its log.
        with contextlib.suppress(BrokenPipeError):
            popen.stdin.write(stdin_data)
        with contextlib.suppress(BrokenPipeError):
            popen.stdin.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path, _log=log, _log_start=log_start)
