"""`recsys bench soak`: the simulator at a steady rate against the embedded stack while a
chaos schedule (simulator.chaos) stops and restarts its parts; then the books are
checked: every event the API acknowledged is in the Delta events table exactly once and
was applied exactly once, no request got a server error, and each process's memory at
the start and the end.

"Applied once" is checked twice: every acknowledged event is applied in Redis (the live
version remembers it, or it is at or below the customer's floor of broker time:
recsys.apply), and each customer's purchase count in their profile (which the updater's
Lua step raises as it records the event, once per event) rose by exactly the purchases
the table holds for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psutil
from deltalake import DeltaTable
from rich.table import Table

from recsys import keys
from recsys.apply import is_applied
from recsys.bus import EventBus
from recsys.engines.embedded import Endpoints
from recsys.engines.process import ManagedProcess, free_port
from recsys.events import RECEIVED_AT
from recsys.redis_routing import get_many
from recsys.settings import Settings
from recsys.stores import SyncRedis
from simulator.chaos import ACTIONS, Action, Chaos, ChaosEngines, ChaosEvent
from simulator.config import SimulationConfig
from simulator.poison import TOKEN, PoisonFeed, PoisonReport
from simulator.population import Population, load_population
from simulator.report import SimulationReport
from simulator.traffic import Traffic

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S: Final = 120.0
# How long the delivery watch may take to read the last events once the workers have
# drained: after a broker restart late in the run it rejoins its group first.
WATCH_CATCH_UP_S: Final = 30.0
HOLD_TIMEOUT_S: Final = 30.0
CHUNK: Final = 5_000
SERVER_ERROR = re.compile(r"HTTP (5\d\d)$")
# The broker time of an event the archive does not hold: above every floor, so only its
# id can show it applied.
NEVER_MS: Final = 2**62


@dataclass(frozen=True)
class SoakOptions:
    duration_s: float = 600.0
    # Purchases per second (views, signals and probes on top): what the embedded broker
    # sustains for 10 minutes (docs/benchmarks.md, "Soak and chaos").
    rate_per_s: float = 15.0
    outage_s: float = 8.0  # how long each stopped part stays down
    customers: int = 20_000
    articles: int = 5_000
    transactions: int = 200_000
    seed: int = 7
    actions: tuple[Action, ...] = ACTIONS  # the chaos schedule, in this order
    # Bad messages put straight onto the events topic, per purchase (simulator.poison).
    poison_share: float = 0.05


@dataclass
class ProcessMemory:
    name: str
    start_mib: float
    end_mib: float
    restarts: int = 0

    @property
    def growth_mib(self) -> float:
        return round(self.end_mib - self.start_mib, 1)


@dataclass
class Books:
    """What the table and Redis say of this run's events."""

    acknowledged: int = 0  # events the API answered 202 (every type)
    purchases_acknowledged: int = 0
    in_table: int = 0  # distinct event ids of this run in the Delta events table
    lost: int = 0  # acknowledged, not in the table
    duplicated: int = 0  # event ids with more than one row
    unacknowledged_in_table: int = 0  # stored, but the client never saw the 202
    not_applied: int = 0  # acknowledged, not applied in Redis
    customers_checked: int = 0
    purchases_applied_twice: int = 0  # profile counts above the table's purchases
    purchases_not_counted: int = 0  # ... below them
    undrained: int = 0  # left in the topics when the check began
    # Acknowledged by the broker (202), never delivered to a consumer of its own that the
    # soak runs beside the updater and the archiver: the broker's loss, not theirs.
    never_delivered: int = 0
    never_delivered_between_s: tuple[float, float] | None = None  # acknowledged then


@dataclass
class PoisonBooks:
    """What became of the bad messages put straight onto the events topic."""

    sent: dict[str, int] = field(default_factory=dict)  # kind -> acknowledged by the broker
    delivered: int = 0  # read from the events topic by the soak's own consumer
    dead_lettered: int = 0  # of those sent, read from the dead-letter topic
    # Delivered, never dead-lettered: with a broker restart in the schedule, the embedded
    # broker (which holds messages in memory) may have lost the message or its dead letter.
    not_dead_lettered: int = 0
    archived: int = 0  # rows of them in the Delta events table: must be none
    applied: int = 0  # customers of them with an applied event in Redis: must be none
    workers_down: list[str] = field(default_factory=list)  # must be none at the end

    @property
    def total(self) -> int:
        return sum(self.sent.values())


@dataclass
class SoakResult:
    options: dict[str, Any]
    machine: dict[str, Any]
    model_version: str
    requests: int
    statuses: dict[str, dict[str, int]]  # endpoint kind -> status class -> requests
    server_errors: dict[str, int]  # "kind: HTTP 5xx" -> requests
    refused_503: int  # POST /events/* while the broker did not acknowledge: the contract
    unexpected_5xx: int  # every other 5xx: the soak fails on any
    transport_errors: int
    events_retried: int
    events_given_up: int
    books: Books
    memory: list[ProcessMemory]
    chaos: list[ChaosEvent]
    freshness: dict[str, Any]
    latency_ms: dict[str, dict[str, float | None]]
    poison: PoisonBooks = field(default_factory=PoisonBooks)
    simulation: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def passed(self) -> bool:
        b, p = self.books, self.poison
        broker_restarted = any(e.action == "broker-restart" for e in self.chaos)
        return not (
            self.unexpected_5xx or b.lost or b.duplicated or b.not_applied
            or b.purchases_applied_twice or b.purchases_not_counted
            or p.archived or p.applied or p.workers_down
            or (p.not_dead_lettered and not broker_restarted)
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        for entry in out["memory"]:
            entry["growth_mib"] = round(entry["end_mib"] - entry["start_mib"], 1)
        return out


# ---------------------------------------------------------------- processes and memory


def _rss_mib(proc: ManagedProcess | None) -> float:
    """The process and its children (the API's workers), resident MiB."""
    if proc is None or not proc.alive():
        return 0.0
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in tree) / 2**20, 1)
    except psutil.Error:
        return 0.0


class SoakStack:
    """The API, the updater and the archiver as children (recsys.supervisor.Stack) on
    the soak's own engines, and the memory of each."""

    def __init__(self, settings: Settings, engines: ChaosEngines) -> None:
        from recsys.supervisor import LocalAccess, Stack

        endpoints = Endpoints(redis_url=engines.redis_url, kafka_bootstrap=engines.bootstrap)
        self.engines = engines
        # The simulator posts with no key, from one address: writes open, and no anonymous
        # limit, which would throttle the whole shop's traffic as one visitor.
        self.stack = Stack(settings, endpoints, free_port(), access=LocalAccess(open_writes=True),
                           env={"RECSYS_RATE_LIMIT_ANONYMOUS_PER_S": "0"})  # fmt: skip
        self.restarts: Counter[str] = Counter()

    def start(self) -> None:
        self.stack.start()

    def processes(self) -> dict[str, ManagedProcess | None]:
        s, e = self.stack, self.engines
        return {"api": s.api, "updater": s.updater, "archiver": s.archiver,
                "valkey": e.valkey, "broker": e.broker}  # fmt: skip

    def memory(self) -> dict[str, float]:
        mine = psutil.Process().memory_info().rss / 2**20
        return {**{n: _rss_mib(p) for n, p in self.processes().items()},
                "load generator": round(mine, 1)}  # fmt: skip

    def restart_worker(self, name: str, down_s: float) -> None:
        self.stack.restart_worker(name, down_s=down_s)
        self.restarts[name] += 1

    def workers_down(self) -> list[str]:
        """The workers not running now (the soak restarts them only by its schedule: a
        worker a message stopped stays down)."""
        s = self.stack
        workers = {"api": s.api, "updater": s.updater, "archiver": s.archiver}
        return sorted(name for name, proc in workers.items() if proc is None or not proc.alive())

    def stop(self) -> None:
        self.stack.stop()


# ---------------------------------------------------------------- the books


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def purchase_counts(client: SyncRedis, version: str, customers: Sequence[str]) -> list[int]:
    counts: list[int] = []
    for part in _chunks(customers):
        pipe = client.pipeline(transaction=False)
        for customer in part:
            pipe.hget(keys.profile(version, customer), "purchases")
        counts += [int(v or 0) for v in pipe.execute()]
    return counts


class DeliveryWatch:
    """A consumer group of the soak's own on the events topic, reading every message the
    broker delivers, to tell a loss in the broker from one in the updater or archiver."""

    def __init__(self, bus: EventBus, topic: str) -> None:
        self.seen: set[str] = set()
        self.tokens: set[str] = set()  # of bad messages (simulator.poison)
        self._stop = threading.Event()
        self._consumer = bus.reader("soak-watch", **{"fetch.wait.max.ms": 50})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, name="soak-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(500, 0.2):
                if message.error() is None:
                    value = message.value() or b""
                    bad = TOKEN.search(value)
                    if bad is not None:
                        self.tokens.add(bad.group().decode())
                        continue
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        self.seen.add(str(json.loads(value)["event_id"]))

    def catch_up(self, event_ids: Iterable[str], timeout_s: float) -> None:
        """Return once every one of event_ids was seen, or after timeout_s."""
        deadline = time.monotonic() + timeout_s
        pending = list(event_ids)
        while pending and time.monotonic() < deadline:
            time.sleep(0.2)
            pending = [e for e in pending if e not in self.seen]

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def check_books(
    settings: Settings,
    client: SyncRedis,
    version: str,
    run_id: str,
    acknowledged: dict[str, tuple[str, str, float]],
    customers: Sequence[str],
    before: Sequence[int],
    delivered: set[str],
    started_at: float,
) -> Books:
    books = Books(acknowledged=len(acknowledged))
    books.purchases_acknowledged = sum(t == "purchase" for _, t, _ in acknowledged.values())
    missing = [at for e, (_, _, at) in acknowledged.items() if e not in delivered]
    books.never_delivered = len(missing)
    if missing:
        books.never_delivered_between_s = (
            round(min(missing) - started_at, 1),
            round(max(missing) - started_at, 1),
        )
    columns = ["event_id", "customer_id", "event_type", RECEIVED_AT]
    rows = DeltaTable(str(settings.events_table)).to_pyarrow_table(columns=columns).to_pylist()
    prefix = f"sim-{run_id}-"
    mine = [r for r in rows if str(r["event_id"]).startswith(prefix)]
    per_id = Counter(str(r["event_id"]) for r in mine)
    books.in_table = len(per_id)
    books.lost = sum(1 for e in acknowledged if e not in per_id)
    books.duplicated = sum(1 for n in per_id.values() if n > 1)
    books.unacknowledged_in_table = sum(1 for e in per_id if e not in acknowledged)

    # Applied: remembered by the version, or at or below its floor for the customer, at
    # the broker time the archive kept (an event not archived is only looked for by id).
    received = {
        str(r["event_id"]): int(r[RECEIVED_AT].timestamp() * 1000)
        for r in mine
        if r[RECEIVED_AT] is not None
    }
    ids = list(acknowledged)
    for part in _chunks(ids):
        customers_of = [acknowledged[event_id][0] for event_id in part]
        states = get_many(client, [keys.applied_events(version, c) for c in customers_of])
        books.not_applied += sum(
            not is_applied(
                state if isinstance(state, bytes) else None,
                received.get(event_id, NEVER_MS),
                event_id,
            )
            for event_id, state in zip(part, states, strict=True)
        )

    # Each purchase that reached the updater, acknowledged or stored (a 202 the client
    # never saw), raised its customer's count once.
    purchases = {e: c for e, (c, t, _) in acknowledged.items() if t == "purchase"}
    purchases.update(
        (str(r["event_id"]), str(r["customer_id"])) for r in mine if r["event_type"] == "purchase"
    )
    expected = Counter(purchases.values())
    index = {c: i for i, c in enumerate(customers)}
    touched = [c for c in expected if c in index]
    after = purchase_counts(client, version, touched)
    books.customers_checked = len(touched)
    for customer, now in zip(touched, after, strict=True):
        rose = now - before[index[customer]]
        books.purchases_applied_twice += max(0, rose - expected[customer])
        books.purchases_not_counted += max(0, expected[customer] - rose)
    return books


def check_poison(
    settings: Settings,
    client: SyncRedis,
    sent: PoisonReport,
    delivered: set[str],
    dead_lettered: set[str],
    workers_down: list[str],
) -> PoisonBooks:
    """The bad messages' books: none archived, none applied, each delivered one in the
    dead-letter topic, every worker still up."""
    tokens = set(sent.tokens)
    books = PoisonBooks(sent=dict(sent.sent), workers_down=workers_down)
    books.delivered = len(tokens & delivered)
    books.dead_lettered = len(tokens & dead_lettered)
    books.not_dead_lettered = len((tokens & delivered) - dead_lettered)
    with contextlib.suppress(Exception):  # no table yet: nothing archived
        frame = DeltaTable(str(settings.events_table)).to_pandas(columns=["customer_id"])
        books.archived = int(frame["customer_id"].str.contains("soak-bad-", regex=False).sum())
    ordered = sorted(tokens)
    for part in _chunks(ordered):
        pipe = client.pipeline(transaction=False)
        for token in part:
            pipe.exists(keys.last_event(token))
        books.applied += sum(int(n) for n in pipe.execute())
    return books


def _server_errors(report: SimulationReport) -> tuple[dict[str, int], int, int]:
    errors = {k: v for k, v in report.errors.items() if SERVER_ERROR.search(k)}
    refused = sum(
        v for k, v in errors.items()
        if k.endswith("HTTP 503") and not k.startswith(("recommend", "popular", "probe"))
    )  # fmt: skip
    return errors, refused, sum(errors.values()) - refused


# ---------------------------------------------------------------- the run


def run(
    settings: Settings,
    work_dir: Path,
    options: SoakOptions,
    spark: SparkSession | None = None,
) -> SoakResult:
    """Generate, train (on `spark` if given), start the stack, load it with chaos, check
    the books; every process the soak started is stopped when it returns."""
    from recsys import machine
    from recsys.bus import KafkaBus
    from recsys.stores import redis_client
    from recsys_bench.stack import bench_input, fresh_data_dir, train_live

    input_dir = bench_input(work_dir, "soak", customers=options.customers,
                            articles=options.articles, transactions=options.transactions,
                            seed=options.seed)  # fmt: skip
    own = fresh_data_dir(settings, work_dir, "soak")
    engines = ChaosEngines(own)
    watch: DeliveryWatch | None = None
    try:
        engines.start()
        resolved = own.model_copy(
            update={"redis_url": engines.redis_url, "kafka_bootstrap_servers": engines.bootstrap}
        )
        report = train_live(resolved, input_dir, "soak", spark)
        stack = SoakStack(resolved, engines)
        stack.start()
        try:
            population = load_population(input_dir, seed=options.seed, drift_fraction=0.2)
            customers = [*population.customer_ids, *population.new_customers]
            client = redis_client(engines.redis_url, 30)
            before = purchase_counts(client, report.version, customers)
            start_memory = stack.memory()
            bus = KafkaBus(engines.bootstrap, resolved)
            watch = DeliveryWatch(bus, resolved.events_topic)
            dead = DeliveryWatch(bus, resolved.dlq_topic)
            poison = PoisonFeed(bus, resolved.events_topic,
                                options.rate_per_s * options.poison_share)  # fmt: skip
            load_started = time.time()

            def drain() -> int:
                return bus.wait_drained(resolved.events_topic,
                                        [resolved.updater_group, resolved.archiver_group],
                                        DRAIN_TIMEOUT_S)  # fmt: skip

            chaos = Chaos(
                engines,
                restart_updater=lambda: stack.restart_worker("updater", options.outage_s),
                restart_archiver=lambda: stack.restart_worker("archiver", options.outage_s),
                drain=drain,
                outage_s=options.outage_s,
                actions=options.actions,
            )
            config = SimulationConfig(
                input_dir=input_dir,
                api_url=stack.stack.api_url,
                rate_per_s=options.rate_per_s,
                duration_s=options.duration_s,
                max_events=10_000_000,
                max_requests=100_000_000,
                retry_unavailable_s=max(60.0, 6 * options.outage_s),
                request_timeout_s=max(5.0, options.outage_s + 2),
                seed=options.seed,
            )
            if options.poison_share > 0:
                poison.start()
            sim, traffic = _load_with_chaos(config, population, chaos, poison)
            sent = poison.stop()
            end_memory = stack.memory()
            undrained = drain()
            watch.catch_up(traffic.accepted_events, WATCH_CATCH_UP_S)
            watch.close()
            dead.catch_up(watch.tokens, WATCH_CATCH_UP_S)
            dead.close()
            client = redis_client(engines.redis_url, 30)
            books = check_books(resolved, client, report.version, sim.run_id,
                                traffic.accepted_events, customers, before, watch.seen,
                                load_started)  # fmt: skip
            books.undrained = undrained
            poisoned = check_poison(resolved, client, sent, watch.tokens, dead.tokens,
                                    stack.workers_down())  # fmt: skip
            client.close()
        finally:
            if watch is not None:
                watch.close()
            stack.stop()
    finally:
        engines.close()
    errors, refused, unexpected = _server_errors(sim)
    return SoakResult(
        options=asdict(options),
        machine=machine.describe(),
        model_version=report.version,
        requests=sim.requests,
        statuses=sim.status_counts,
        server_errors=errors,
        refused_503=refused,
        unexpected_5xx=unexpected,
        transport_errors=sum(c.get("transport", 0) for c in sim.status_counts.values()),
        events_retried=sim.events_retried,
        events_given_up=sim.events_given_up,
        books=books,
        memory=[
            ProcessMemory(
                name,
                start_memory[name],
                end_memory[name],
                stack.restarts[name] + engines.restarts[name],
            )
            for name in start_memory
        ],
        chaos=chaos.events,
        freshness=asdict(sim.freshness),
        latency_ms={kind: {"p50": s.p50_ms, "p99": s.p99_ms} for kind, s in sim.latency.items()},
        poison=poisoned,
        simulation=sim.to_dict(),
    )


def _load_with_chaos(
    config: SimulationConfig, population: Population, chaos: Chaos, poison: PoisonFeed
) -> tuple[SimulationReport, Traffic]:
    """The load in a thread of its own (its event loop), the chaos on this one; the bad
    messages are held with the load."""
    from simulator.run import simulate_async

    box: dict[str, Any] = {}
    started = threading.Event()

    def on_start(traffic: Traffic) -> None:
        box["traffic"], box["loop"] = traffic, asyncio.get_running_loop()
        started.set()

    def load() -> None:
        try:
            box["report"] = asyncio.run(simulate_async(config, population, on_start))
        except BaseException as exc:
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=load, name="soak-load")
    thread.start()
    started.wait()
    if "traffic" in box:
        traffic: Traffic = box["traffic"]
        loop: asyncio.AbstractEventLoop = box["loop"]

        async def held() -> None:
            traffic.events_open.clear()
            deadline = time.monotonic() + HOLD_TIMEOUT_S
            while traffic.events_in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        def hold() -> None:
            poison.pause()
            asyncio.run_coroutine_threadsafe(held(), loop).result()

        def release() -> None:
            loop.call_soon_threadsafe(traffic.events_open.set)
            poison.resume()

        chaos.run(time.monotonic(), config.duration_s, hold, release)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["report"], box["traffic"]


def table(result: SoakResult) -> Table:
    b, p = result.books, result.poison
    out = Table(title=f"recsys bench soak: {result.options['duration_s']:g} s at "
                      f"{result.options['rate_per_s']:g} purchases/s, "
                      f"{len(result.chaos)} chaos actions", show_header=False)  # fmt: skip
    out.add_column(style="bold")
    out.add_column()
    rows = [
        ("verdict", "PASSED" if result.passed else "FAILED"),
        ("requests", f"{result.requests:,}; 5xx other than the broker-outage 503s: "
                     f"{result.unexpected_5xx}; 503 on events while the broker did not "
                     f"acknowledge: {result.refused_503:,} (sent again: "
                     f"{result.events_retried:,}, given up: {result.events_given_up:,}); "
                     f"transport errors {result.transport_errors:,}"),
        ("events", f"{b.acknowledged:,} acknowledged ({b.purchases_acknowledged:,} purchases); "
                   f"in the Delta table {b.in_table:,}: lost {b.lost}, duplicated "
                   f"{b.duplicated}, stored without the client seeing its 202 "
                   f"{b.unacknowledged_in_table}"),
        ("broker", f"acknowledged, never delivered to any consumer: {b.never_delivered}"
                   + (f" (acknowledged {b.never_delivered_between_s[0]:.0f}-"
                      f"{b.never_delivered_between_s[1]:.0f} s into the load)"
                      if b.never_delivered_between_s else "")),
        ("applied", f"not applied {b.not_applied}; purchase counts of {b.customers_checked:,} "
                    f"customers: applied twice {b.purchases_applied_twice}, missing "
                    f"{b.purchases_not_counted}; undrained at the check {b.undrained}"),
        ("bad messages", f"{p.total:,} straight onto the topic ({len(p.sent)} kinds); "
                         f"delivered {p.delivered:,}, dead-lettered {p.dead_lettered:,}, "
                         f"delivered but not dead-lettered {p.not_dead_lettered}; "
                         f"archived {p.archived}, applied {p.applied}; workers down at "
                         f"the end: {', '.join(p.workers_down) or 'none'}"),
        ("freshness", f"p50 {result.freshness.get('p50_ms')} ms, p99 "
                      f"{result.freshness.get('p99_ms')} ms over "
                      f"{result.freshness.get('completed')} probes "
                      f"({result.freshness.get('timed_out')} timed out)"),
    ]  # fmt: skip
    for event in result.chaos:
        rows.append(
            (
                f"chaos {event.action}",
                f"at {event.at_s:.0f} s, back after {event.down_s:.1f} s {event.note}".rstrip(),
            )
        )
    for m in result.memory:
        rows.append(
            (
                f"memory {m.name}",
                f"{m.start_mib:.0f} -> {m.end_mib:.0f} MiB "
                f"({m.growth_mib:+.0f}), restarts {m.restarts}",
            )
        )
    for name, value in rows:
        out.add_row(name, value)
    return out
