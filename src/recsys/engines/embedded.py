"""Find or start the engines a command needs: settings first, then the run file, then spawn.

An engine this command started is stopped when the command ends (the broker drained
first), and dies with it if it is killed, so no engine outlives its owner.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from recsys.engines.process import ManagedProcess
from recsys.engines.runfile import EngineEntry, RunFile
from recsys.engines.tansu import broker_answers, start_tansu
from recsys.engines.valkey import start_valkey, valkey_answers
from recsys.redaction import redacted_url
from recsys.settings import Settings

log = logging.getLogger(__name__)

Engine = Literal["redis", "kafka"]


@dataclass
class Endpoints:
    """Where this command reaches each engine; None for an engine it did not ask for."""

    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    owned: set[Engine] = field(default_factory=set)

    def require_redis(self) -> str:
        if self.redis_url is None:
            raise RuntimeError("redis was not resolved for this command")
        return self.redis_url

    def require_kafka(self) -> str:
        if self.kafka_bootstrap is None:
            raise RuntimeError("kafka was not resolved for this command")
        return self.kafka_bootstrap

    def as_env(self) -> dict[str, str]:
        """Settings for child processes, so they use these engines and start none. The
        Redis URL carries its password: a process's environment is readable by its user
        only, like the run file."""
        env: dict[str, str] = {}
        if self.redis_url:
            env["RECSYS_REDIS_URL"] = self.redis_url
        if self.kafka_bootstrap:
            env["RECSYS_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap
        return env


class EmbeddedEngines:
    """Context manager resolving the engines in `need`; stops the ones it started."""

    def __init__(
        self,
        settings: Settings,
        need: set[Engine],
        *,
        before_broker_stop: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.need = need
        self.before_broker_stop = before_broker_stop
        self.run_file = RunFile(settings.run_dir)
        self.endpoints = Endpoints()
        self._owned: dict[Engine, ManagedProcess] = {}

    def __enter__(self) -> Endpoints:
        try:
            with self.run_file.locked():
                if "redis" in self.need:
                    self.endpoints.redis_url = self._resolve_redis()
                if "kafka" in self.need:
                    self.endpoints.kafka_bootstrap = self._resolve_kafka()
        except BaseException:
            self.close()
            raise
        self.endpoints.owned = set(self._owned)
        return self.endpoints

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        broker = self._owned.pop("kafka", None)
        if broker is not None:
            if self.before_broker_stop is not None and self.endpoints.kafka_bootstrap:
                with contextlib.suppress(Exception):
                    self.before_broker_stop(self.endpoints.kafka_bootstrap)
            self._stop("kafka", broker)
        store = self._owned.pop("redis", None)
        if store is not None:
            self._stop("redis", store)

    def _stop(self, name: Engine, proc: ManagedProcess) -> None:
        proc.stop()
        with contextlib.suppress(OSError), self.run_file.locked():
            self.run_file.remove(name, proc.pid)

    def _resolve_redis(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        entry = self.run_file.live("redis")
        if entry is not None and valkey_answers(entry.address):
            return entry.address
        proc, url = start_valkey(
            self.settings.data_dir, timeout=self.settings.engine_start_timeout_s
        )
        self._adopt("redis", proc, url)
        log.info("started embedded valkey-server at %s (pid %d)", redacted_url(url), proc.pid)
        return url

    def _resolve_kafka(self) -> str:
        if self.settings.kafka_bootstrap_servers:
            return self.settings.kafka_bootstrap_servers
        entry = self.run_file.live("kafka")
        if entry is not None and broker_answers(entry.address):
            return entry.address
        proc, bootstrap = start_tansu(
            self.settings.run_dir, timeout=self.settings.engine_start_timeout_s
        )
        self._adopt("kafka", proc, bootstrap)
        log.info("started embedded tansu broker at %s (pid %d)", bootstrap, proc.pid)
        return bootstrap

    def _adopt(self, name: Engine, proc: ManagedProcess, address: str) -> None:
        self._owned[name] = proc
        self.run_file.put(name, EngineEntry(address=address, pid=proc.pid, owner_pid=os.getpid()))
