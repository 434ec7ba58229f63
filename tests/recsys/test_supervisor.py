"""`recsys up`'s supervisor: a crashed worker is started again, with a pause that grows
while it keeps crashing, and the stack goes on."""

from __future__ import annotations

import threading
from pathlib import Path

from recsys.engines.embedded import Endpoints
from recsys.engines.process import free_port
from recsys.settings import Settings
from recsys.supervisor import RESTART_FIRST_S, Stack
from support import wait_for


def test_a_crashed_worker_is_started_again(
    settings: Settings, endpoints: Endpoints, tmp_path: Path
) -> None:
    own = settings.model_copy(
        update={"data_dir": tmp_path / "data", "updater_group": "sup-upd",
                "archiver_group": "sup-arch"}
    )  # fmt: skip
    stack = Stack(own, endpoints, free_port(), open_writes=True)
    said: list[str] = []
    stop = threading.Event()
    supervisor: threading.Thread | None = None
    try:
        stack.start()
        assert stack.updater is not None
        crashed = stack.updater
        supervisor = threading.Thread(target=stack.supervise, args=(said.append, stop))
        supervisor.start()
        crashed.popen.kill()
        wait_for(lambda: stack.updater is not crashed and stack.updater.alive(),
                 timeout=RESTART_FIRST_S + 30)  # fmt: skip
        assert said and said[0].startswith("updater exited (code -9")
        assert stack.api is not None and stack.api.alive()
        assert stack.archiver is not None and stack.archiver.alive()
    finally:
        stop.set()
        if supervisor is not None:
            supervisor.join(timeout=10)
        stack.stop()
