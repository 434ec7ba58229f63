"""`recsys up`'s supervisor: a crashed worker is started again, with a pause that grows
while it keeps crashing, and the stack goes on; what a local stack opens and mints."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from recsys.api_keys import ApiKey, digest, new_key
from recsys.engines.embedded import Endpoints
from recsys.engines.process import free_port
from recsys.settings import Settings
from recsys.supervisor import RESTART_FIRST_S, LocalAccess, Stack, local_access, page_url
from support import wait_for


def test_a_crashed_worker_is_started_again(
    settings: Settings, endpoints: Endpoints, tmp_path: Path
) -> None:
    own = settings.model_copy(
        update={"data_dir": tmp_path / "data", "updater_group": "sup-upd",
                "archiver_group": "sup-arch"}
    )  # fmt: skip
    stack = Stack(own, endpoints, free_port(), access=LocalAccess(open_writes=True))
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


def _local(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"auth_disabled": False, **update})


def test_on_loopback_a_read_key_is_minted_for_the_page(settings: Settings) -> None:
    own = _local(settings, api_host="127.0.0.1", api_keys=[])
    access = local_access(own)
    assert access.open_writes
    assert access.page_key is not None and access.page_key.startswith("rsk_")
    (entry,) = access.keys
    assert entry.role == "read" and entry.sha256 == digest(access.page_key)
    url = page_url("http://127.0.0.1:8000", access.page_key)
    assert url == f"http://127.0.0.1:8000/#key={access.page_key}"
    # Each run mints its own.
    assert local_access(own).page_key != access.page_key


def test_the_api_gets_the_minted_keys_hashes_with_the_configured_ones(
    settings: Settings, endpoints: Endpoints
) -> None:
    _, configured = new_key("shop", "events")
    own = _local(settings, api_host="127.0.0.1", api_keys=[configured])
    access = local_access(own)
    # A key is configured: writes stay closed, the page still gets its read key.
    assert not access.open_writes and access.page_key is not None
    env = Stack(own, endpoints, free_port(), access=access).child_env()
    assert "RECSYS_OPEN_WRITES" not in env
    entries = [ApiKey(**entry) for entry in json.loads(env["RECSYS_API_KEYS"])]
    assert entries == [configured, *access.keys]
    assert access.page_key not in " ".join(env.values())


def test_bound_to_every_interface_nothing_is_opened_or_minted(
    settings: Settings, endpoints: Endpoints
) -> None:
    own = _local(settings, api_host="0.0.0.0", api_keys=[])
    access = local_access(own)
    assert not access.open_writes and access.page_key is None and access.keys == []
    env = Stack(own, endpoints, free_port(), access=access).child_env()
    assert "RECSYS_OPEN_WRITES" not in env and "RECSYS_API_KEYS" not in env
