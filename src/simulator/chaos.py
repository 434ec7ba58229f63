"""What the soak does to the stack while the load runs: stop and restart Valkey, freeze
and restart the broker, kill the updater and the archiver, one at a time on a schedule.

The soak owns its engines (not the run file's): each restarts on the port it had, so
the API and the workers reconnect to the same address. Valkey stops with SIGTERM and
restarts from its append-only file. The embedded broker keeps messages in memory only,
so it is tested two ways: frozen (SIGSTOP for the outage, then SIGCONT), which every
client sees as a broker that stopped answering and which loses nothing; and restarted,
after the load is held and the consumers have drained it (what a restart of a memory
broker would otherwise lose is documented, not tested). The updater and the archiver
are killed with SIGKILL, mid-batch, and started again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from recsys.bus import ensure_topics
from recsys.engines.process import ManagedProcess, free_port
from recsys.engines.tansu import start_tansu
from recsys.engines.valkey import new_password, start_valkey
from recsys.settings import Settings

log = logging.getLogger(__name__)

Action = Literal["valkey", "broker-freeze", "updater", "archiver", "broker-restart"]
# The order the schedule takes them in, spread over the run.
ACTIONS: Final[tuple[Action, ...]] = (
    "valkey",
    "broker-freeze",
    "updater",
    "archiver",
    "broker-restart",
)


class ChaosEngines:
    """Valkey and the broker, each on a fixed loopback port, restartable in place."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._valkey_port = free_port()
        self._broker_port = free_port()
        self.valkey: ManagedProcess | None = None
        self.broker: ManagedProcess | None = None
        self.restarts: Counter[str] = Counter()  # starts after the first, by engine
        self._frozen = False
        # One password for every start: the clients under test keep their URL across
        # restarts.
        self._valkey_password = new_password()
        self.redis_url = f"redis://:{self._valkey_password}@127.0.0.1:{self._valkey_port}/0"
        self.bootstrap = f"127.0.0.1:{self._broker_port}"

    def start(self) -> None:
        self.start_valkey()
        self.start_broker()

    def start_valkey(self) -> None:
        if self.valkey is not None:
            self.restarts["valkey"] += 1
        timeout = self.settings.engine_start_timeout_s
        self.valkey, _ = start_valkey(self.settings.data_dir, timeout=timeout,
                                      port=self._valkey_port,
                                      password=self._valkey_password)  # fmt: skip

    def stop_valkey(self) -> None:
        """SIGTERM: Valkey writes its append-only file out and exits."""
        if self.valkey is not None:
            self.valkey.stop()

    def start_broker(self) -> None:
        if self.broker is not None:
            self.restarts["broker"] += 1
        timeout = self.settings.engine_start_timeout_s
        self.broker, _ = start_tansu(self.settings.run_dir, timeout=timeout,
                                     port=self._broker_port)  # fmt: skip
        ensure_topics(self.bootstrap, self.settings)

    def stop_broker(self) -> None:
        self.thaw_broker()
        if self.broker is not None:
            self.broker.stop()

    def freeze_broker(self) -> None:
        if self.broker is not None:
            os.kill(self.broker.pid, signal.SIGSTOP)
            self._frozen = True

    def thaw_broker(self) -> None:
        if self.broker is not None and self._frozen:
            os.kill(self.broker.pid, signal.SIGCONT)
            self._frozen = False

    def close(self) -> None:
        self.stop_broker()
        self.stop_valkey()


@dataclass
class ChaosEvent:
    action: Action
    at_s: float  # since the load started
    down_s: float  # from the stop until the part was back
    note: str = ""


@dataclass
class Chaos:
    """Runs the schedule on the main thread, which outlives every process it starts: a
    child started from a worker thread would get its parent-death signal when that
    thread ends (prctl PR_SET_PDEATHSIG is per thread), so the load runs in a thread and
    the chaos does not."""

    engines: ChaosEngines
    restart_updater: Callable[[], None]  # SIGKILL and start again, waits for partitions
    restart_archiver: Callable[[], None]
    drain: Callable[[], int]  # waits until the workers consumed everything; returns the rest
    outage_s: float
    actions: tuple[Action, ...] = ACTIONS
    events: list[ChaosEvent] = field(default_factory=list)

    def run(
        self,
        started: float,
        duration_s: float,
        hold: Callable[[], None],
        release: Callable[[], None],
    ) -> None:
        """Each action at its share of the run (the k-th of n at (k + 0.5) / (n + 1)):
        the load settles first and ends with no outage in flight. `started` is a
        time.monotonic() reading."""
        for k, action in enumerate(self.actions):
            at = started + duration_s * (k + 0.5) / (len(self.actions) + 1)
            time.sleep(max(0.0, at - time.monotonic()))
            began = time.monotonic()
            note = ""
            if action == "broker-restart":
                hold()  # no event may be acknowledged by a broker about to forget it
                try:
                    left = self.drain()
                    if left:  # a memory broker would take them with it: not our loss
                        note = f"not restarted: {left} events not drained"
                    else:
                        note = "drained"
                        self._broker_restart()
                finally:
                    release()
            else:
                self._step(action)
            down = time.monotonic() - began
            self.events.append(ChaosEvent(action, round(began - started, 1), round(down, 1), note))
            log.info("chaos: %s done in %.1f s", action, down)

    def _step(self, action: Action) -> None:
        if action == "valkey":
            self.engines.stop_valkey()
            time.sleep(self.outage_s)
            self.engines.start_valkey()
        elif action == "broker-freeze":
            self.engines.freeze_broker()
            time.sleep(self.outage_s)
            self.engines.thaw_broker()
        elif action == "updater":
            self.restart_updater()
        elif action == "archiver":
            self.restart_archiver()

    def _broker_restart(self) -> None:
        self.engines.stop_broker()
        time.sleep(min(self.outage_s, 2.0))
        self.engines.start_broker()
