"""Run the API and the updater as children of one process, start a crashed worker
again, and stop them in order.

Order on the way down: the API first (no new events), then wait until the updater has
consumed everything (the embedded broker keeps events in memory only), then the updater.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from recsys.api_keys import ApiKey, Role, new_key
from recsys.bus import wait_drained
from recsys.engines.embedded import Endpoints
from recsys.engines.process import EngineStartError, ManagedProcess, recsys_command, spawn
from recsys.readiness import ready_file_env
from recsys.settings import Settings

log = logging.getLogger(__name__)

# A crashed worker is started again after RESTART_FIRST_S, doubling while it keeps
# crashing, up to RESTART_MAX_S.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0


def drain_broker(settings: Settings, bootstrap: str) -> int:
    """Wait until the updater and the archiver have consumed everything, and the archiver
    every catalog article; warn of the rest.

    The embedded broker keeps messages in memory only, so what is left when it stops is lost.
    """
    started = time.monotonic()
    left = wait_drained(
        bootstrap,
        settings.events_topic,
        [settings.updater_group, settings.archiver_group],
        settings.drain_timeout_s,
        settings,
    )
    remaining_s = max(0.0, settings.drain_timeout_s - (time.monotonic() - started))
    articles = wait_drained(
        bootstrap, settings.catalog_topic, [settings.archiver_group], remaining_s, settings
    )
    if left or articles:
        log.warning(
            "%d events and %d catalog articles were not consumed by every worker within %.0f s",
            left,
            articles,
            settings.drain_timeout_s,
        )
    return left + articles


def on_loopback(settings: Settings) -> bool:
    """The API listens on this machine only (the settings allow loopback or 0.0.0.0)."""
    return settings.api_host != "0.0.0.0"


def opens_writes(settings: Settings) -> bool:
    """Whether `recsys up` and `recsys demo` open their API's writes (local development):
    only with no key configured (in RECSYS_API_KEYS or a keys file), when the API would
    take no write at all, and on loopback only."""
    no_keys = not settings.api_keys and settings.api_keys_file is None
    return no_keys and on_loopback(settings)


@dataclass
class LocalAccess:
    """How a local stack's API (`recsys up`, `recsys demo`) lets its own people in: writes
    open (RECSYS_OPEN_WRITES) and keys minted for this run, added to the configured ones.
    A minted key lives as long as the run: only its hash reaches the API's environment."""

    open_writes: bool = False
    keys: list[ApiKey] = field(default_factory=list)
    page_key: str | None = field(default=None, repr=False)

    def mint(self, purpose: str, role: Role) -> str:
        """A key for this run; its name is unique, so never a configured key's."""
        key, entry = new_key(f"{purpose}-{secrets.token_hex(4)}", role)
        self.keys.append(entry)
        return key

    def env(self, settings: Settings) -> dict[str, str]:
        """What the API's environment gets: the configured keys and the minted ones."""
        env = {"RECSYS_OPEN_WRITES": "true"} if self.open_writes else {}
        if self.keys:
            entries = [key.entry() for key in (*settings.api_keys, *self.keys)]
            env["RECSYS_API_KEYS"] = json.dumps(entries)
        return env


def local_access(settings: Settings) -> LocalAccess:
    """Writes open where opens_writes says so, and on loopback a read key for the page
    (customers' data needs one), printed in the page's address: `page_url`. Bound to
    0.0.0.0 the stack opens nothing and mints no page key: it takes configured keys only."""
    access = LocalAccess(open_writes=opens_writes(settings))
    if on_loopback(settings):
        access.page_key = access.mint("page", "read")
    return access


def page_url(api_url: str, key: str) -> str:
    """The page's address with its key in the fragment: browsers never send a fragment to
    a server (so no access log holds it); the page keeps the key in sessionStorage and
    takes it out of the address bar (docs/page.md)."""
    return f"{api_url}/#key={key}"


class Stack:
    def __init__(
        self,
        settings: Settings,
        endpoints: Endpoints,
        api_port: int,
        *,
        access: LocalAccess | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """access: open writes and minted keys for the API (none: the settings' own);
        env: more of the children's environment (a benchmark's limits)."""
        self.settings = settings
        self.endpoints = endpoints
        self.api_port = api_port
        self.access = access or LocalAccess()
        self.env = dict(env or {})
        self.api: ManagedProcess | None = None
        self.updater: ManagedProcess | None = None
        self.archiver: ManagedProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.api_port}"

    def child_env(self) -> dict[str, str]:
        """The environment of each child: the engines, the data dir, the access."""
        return {
            **os.environ,
            **self.endpoints.as_env(),
            "RECSYS_DATA_DIR": str(self.settings.data_dir.resolve()),
            **self.access.env(self.settings),
            **self.env,
        }

    def _child(self, name: str, *args: str) -> ManagedProcess:
        env = {**self.child_env(), **ready_file_env(self._ready_file(name))}
        return spawn(name, recsys_command(*args), env=env,
                     log_path=self.settings.run_dir / f"{name}.log")  # fmt: skip

    def _ready_file(self, name: str) -> Path:
        return self.settings.run_dir / f"{name}.ready"

    def _wait_ready(self, worker: ManagedProcess) -> None:
        """Until the worker announces it owns partitions (it consumes from there on)."""
        ready = self._ready_file(worker.name)
        worker.wait_ready(ready.exists, self.settings.engine_start_timeout_s)

    def start(self) -> None:
        workers = [self._child("updater", "updater"), self._child("archiver", "archiver")]
        self.updater, self.archiver = workers
        self.api = self._child(
            "api", "serve", "--host", self.settings.api_host, "--port", str(self.api_port)
        )
        self.api.wait_ready(self._api_answers, self.settings.engine_start_timeout_s + 30)
        # A consumer takes a few seconds to join its group; until then events wait.
        for worker in workers:
            self._wait_ready(worker)

    def restart_worker(self, name: str, *, down_s: float = 0.0) -> None:
        """SIGKILL the updater or the archiver (a crash mid-batch), leave it down for
        down_s, start it again and wait until it owns partitions (the soak's chaos)."""
        old = {"updater": self.updater, "archiver": self.archiver}[name]
        if old is not None:
            old.popen.kill()
            old.stop()  # reaps it
        time.sleep(down_s)
        new = self._child(name, name)
        if name == "updater":
            self.updater = new
        else:
            self.archiver = new
        self._wait_ready(new)

    def _api_answers(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health/live", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self, poll_s: float = 0.5) -> str:
        """Block until a child exits; return its name (Ctrl-C interrupts this)."""
        while True:
            for proc in (self.api, self.updater, self.archiver):
                if proc is not None and not proc.alive():
                    return proc.name
            time.sleep(poll_s)

    def supervise(
        self,
        say: Callable[[str], None],
        stop: threading.Event | None = None,
        poll_s: float = 0.5,
    ) -> str:
        """Keep the workers running: a crashed updater or archiver is started again after
        a pause that doubles while it keeps crashing (RESTART_FIRST_S up to RESTART_MAX_S;
        back to the first once it has run RESTART_MAX_S), and `say` tells why. Returns
        when the API exits (its name) or when stop is set ('')."""
        delay = {"updater": RESTART_FIRST_S, "archiver": RESTART_FIRST_S}
        started = {name: time.monotonic() for name in delay}
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.api is not None and not self.api.alive():
                return self.api.name
            for name, proc in (("updater", self.updater), ("archiver", self.archiver)):
                if proc is None or proc.alive():
                    continue
                if time.monotonic() - started[name] >= RESTART_MAX_S:
                    delay[name] = RESTART_FIRST_S
                code = proc.popen.poll()
                say(f"{name} exited (code {code}; log {proc.log_path}); "
                    f"starting it again in {delay[name]:.0f} s")  # fmt: skip
                proc.stop()
                if stop.wait(delay[name]):
                    return ""
                fresh = self._child(name, name)
                if name == "updater":
                    self.updater = fresh
                else:
                    self.archiver = fresh
                started[name] = time.monotonic()
                delay[name] = min(delay[name] * 2, RESTART_MAX_S)
            stop.wait(poll_s)
        return ""

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        workers = [w for w in (self.updater, self.archiver) if w is not None]
        if self.endpoints.kafka_bootstrap and all(w.alive() for w in workers):
            drain_broker(self.settings, self.endpoints.kafka_bootstrap)
        for worker in workers:
            worker.stop()


__all__ = ["EngineStartError", "LocalAccess", "Stack", "local_access", "page_url"]
