"""A child tells its supervisor that it is ready, through a file the supervisor names.

The supervisor sets RECSYS_READY_FILE in the child's environment and waits for the file
to appear; the child creates it once it works (a consumer: once it owns partitions). A
child started by hand has no such variable and announces nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

READY_FILE_ENV = "RECSYS_READY_FILE"


def ready_file_env(path: Path) -> dict[str, str]:
    """The environment entry naming path as the child's ready file; clears a stale one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return {READY_FILE_ENV: str(path)}


def announce_ready() -> None:
    """Create the ready file the supervisor named, if it named one."""
    named = os.environ.get(READY_FILE_ENV)
    if named:
        Path(named).touch()
