"""`recsys bench batch --shape`: the H&M data set's real shape (or a tenth of its
customers and purchases) through the whole stack on one machine.

Per shape: generate the CSVs (kept for the next run), run the batch on fresh embedded
engines, then serve `/recommend` and run the updater against the live model. It reports
each step's seconds, the peak resident memory of each process (this Python driver, the
Spark JVM, Valkey, the broker, sampled every half second), the lake's and the index's
size on disk, Valkey's memory per customer beyond the vectors and histories it holds,
`/recommend` at saturation and at half of it (p50/p99), and the updater's events/s.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.table import Table

from recsys import keys
from recsys.settings import Settings
from recsys.stores import SyncRedis
from recsys.user_store import RedisUserStore

MIB = 2**20


@dataclass(frozen=True)
class Shape:
    customers: int
    articles: int
    transactions: int


# The real data set's counts; the tenth keeps the whole catalogue, so its /recommend
# runs the same index query over 10x fewer customers (the reference for the p99 target).
SHAPES: dict[str, Shape] = {
    "hm-full": Shape(customers=1_371_980, articles=105_542, transactions=31_788_324),
    "hm-tenth": Shape(customers=137_198, articles=105_542, transactions=3_178_832),
}


# ---------------------------------------------------------------- memory


def _role(process: psutil.Process, me: int) -> str:
    if process.pid == me:
        return "python driver"
    name = process.name()
    if name == "java":
        return "spark JVM"
    if name.startswith("valkey"):
        return "valkey"
    if name == "tansu":
        return "broker"
    return "other children"


class PeakMemory:
    """The largest resident memory seen per role (this process and its descendants),
    sampled on a thread; `mark()` starts a new phase, and each phase keeps its own peaks."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.phases: dict[str, dict[str, float]] = {}
        self._phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def mark(self, phase: str) -> None:
        self._phase = phase

    def _sample(self) -> None:
        me = psutil.Process()
        peaks = self.phases.setdefault(self._phase, {})
        by_role: dict[str, float] = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                role = _role(process, me.pid)
                rss = process.memory_info().rss / MIB
            except psutil.Error:
                continue
            # A role may be several processes (the API's workers): the largest one counts,
            # since the target is per process.
            by_role[role] = max(by_role.get(role, 0.0), rss)
        for role, rss in by_role.items():
            peaks[role] = max(peaks.get(role, 0.0), round(rss, 1))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @contextmanager
    def running(self) -> Iterator[PeakMemory]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def disk_mib(path: Path) -> float:
    if not path.exists():
        return 0.0
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / MIB, 1)


# ---------------------------------------------------------------- Valkey


def valkey_memory(
    client: SyncRedis, version: str, customers: list[str], total_customers: int
) -> dict[str, float]:
    """Valkey's used memory, and per customer what is left of it after the vectors and
    histories (their mean MEMORY USAGE over a sample of customers, times the customers)."""
    pipe = client.pipeline(transaction=False)
    for customer in customers:
        pipe.memory_usage(keys.user_vector(version, customer), samples=0)
        pipe.memory_usage(keys.history(customer), samples=0)
    sizes = np.asarray([s or 0 for s in pipe.execute()], dtype=np.float64).reshape(-1, 2)
    info: dict[str, Any] = client.info("memory")
    used = float(info["used_memory"])
    vector, history = (sizes.mean(axis=0) if len(sizes) else np.zeros(2)).tolist()
    beyond = (used - (vector + history) * total_customers) / max(1, total_customers)
    return {
        "used_memory_mib": round(used / MIB, 1),
        "keys": float(client.dbsize()),
        "vector_bytes_mean": round(vector, 1),
        "history_bytes_mean": round(history, 1),
        "bytes_per_customer_beyond_vector_and_history": round(beyond, 1),
        "model_versions_held": 1.0,
    }


# ---------------------------------------------------------------- one shape


@dataclass
class ShapeResult:
    shape: str
    customers: int
    articles: int
    transactions: int
    trainer: str
    generate_s: float
    batch_s: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    users: int = 0
    items: int = 0
    interactions: int = 0
    holdout: dict[str, float] = field(default_factory=dict)
    peak_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    lake_mib: dict[str, float] = field(default_factory=dict)
    index_mib: float = 0.0
    valkey: dict[str, float] = field(default_factory=dict)
    # The same measure after the updater applied its events (what events leave behind).
    valkey_after_updates: dict[str, float] = field(default_factory=dict)
    recommend: dict[str, float] = field(default_factory=dict)
    updater_events_per_s: float = 0.0
    # The embedded Valkey stopped and started again on its append-only file: seconds until
    # it answers (None: not within RECSYS_ENGINE_START_TIMEOUT_S), and the keys it holds.
    valkey_restart_s: float | None = None
    valkey_restart_keys: int = 0
    # One erasure (recsys.erasure) of a customer the updater moved: seconds per part.
    erasure_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_shape(
    settings: Settings,
    name: str,
    work_dir: Path,
    spark: Any,
    *,
    serve_s: float,
    connections: int,
    updater_events: int,
) -> ShapeResult:
    """Generate (once), train and publish on fresh engines, then serve and update."""
    from recsys.bus import ensure_topics
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.erasure import erase_customer
    from recsys.model_layout import shard_dir
    from recsys.model_store import read_factors
    from recsys.stores import redis_client
    from recsys_bench.stack import bench_input, fresh_data_dir, train_live

    shape = SHAPES[name]
    started = time.perf_counter()
    input_dir = bench_input(work_dir, name, customers=shape.customers, articles=shape.articles,
                            transactions=shape.transactions, seed=3)  # fmt: skip
    result = ShapeResult(name, shape.customers, shape.articles, shape.transactions,
                         settings.trainer, round(time.perf_counter() - started, 1))  # fmt: skip
    own = fresh_data_dir(settings, work_dir, name)
    with PeakMemory().running() as memory, EmbeddedEngines(own, {"redis", "kafka"}) as endpoints:
        ensure_topics(endpoints.require_kafka(), own)
        resolved = own.model_copy(
            update={"redis_url": endpoints.redis_url,
                    "kafka_bootstrap_servers": endpoints.kafka_bootstrap}
        )  # fmt: skip
        memory.mark("batch")
        started = time.perf_counter()
        report = train_live(resolved, input_dir, name, spark)
        result.batch_s = round(time.perf_counter() - started, 1)
        result.steps = {k: round(v, 1) for k, v in report.step_seconds.items()}
        result.users, result.items = report.users, report.items
        result.interactions, result.holdout = report.interactions, report.metrics
        for layer in ("bronze", "silver", "gold"):
            result.lake_mib[layer] = disk_mib(resolved.lake_dir / layer)
        result.index_mib = disk_mib(shard_dir(resolved.models_dir, report.version))

        factors = read_factors(resolved.models_dir, report.version)
        rng = np.random.default_rng(5)
        picked = rng.choice(len(factors["user_ids"]), size=min(10_000, report.users),
                            replace=False)  # fmt: skip
        sample = [str(c) for c in factors["user_ids"][picked]]
        client = redis_client(endpoints.require_redis(), 60)
        try:
            result.valkey = valkey_memory(client, report.version, sample, report.users)
            memory.mark("serve")
            result.recommend = _serve(resolved, sample[:1_000], serve_s, connections)
            memory.mark("update")
            result.updater_events_per_s = _update(resolved, factors, updater_events)
            erased = erase_customer(resolved, RedisUserStore(client), sample[0])
            result.erasure_s = {**erased.seconds, "total": round(sum(erased.seconds.values()), 3)}
            result.valkey_after_updates = valkey_memory(
                client, report.version, sample[1:], report.users
            )
        finally:
            client.close()
    result.peak_mib = memory.phases
    result.valkey_restart_s, result.valkey_restart_keys = _restart_valkey(own)
    return result


def _restart_valkey(settings: Settings) -> tuple[float | None, int]:
    """Start the shape's Valkey again on the append-only file its stop wrote out."""
    from recsys.engines.process import EngineStartError
    from recsys.engines.valkey import start_valkey
    from recsys.stores import redis_client

    started = time.perf_counter()
    try:
        process, url = start_valkey(settings.data_dir, timeout=settings.engine_start_timeout_s)
    except EngineStartError:
        return None, 0
    took = round(time.perf_counter() - started, 1)
    try:
        client = redis_client(url, 30)
        try:
            return took, int(client.dbsize())
        finally:
            client.close()
    finally:
        process.stop()


def _serve(
    settings: Settings, customers: list[str], duration_s: float, connections: int
) -> dict[str, float]:
    """/recommend (plain top 10) at saturation, then at half of it."""
    from recsys_bench.serving import VARIANTS, RunShape, at_max_and_half, run_wrk, wrk_script
    from recsys_bench.stack import child_env
    from recsys_bench.streaming import start_api

    env = child_env(settings)
    api, url = start_api(env, settings.data_dir / "api.log")
    try:
        with tempfile.TemporaryDirectory(prefix="recsys-bench-scale-") as tmp:
            folder = Path(tmp)
            warm = wrk_script("/", customers, VARIANTS["plain"], folder)
            run_wrk(f"{url}/", warm, min(3.0, duration_s), connections)
            peak, half = at_max_and_half(f"{url}/", customers, VARIANTS["plain"],
                                         RunShape(duration_s, connections, folder))  # fmt: skip
    finally:
        api.stop()
    return {"max_rps": round(peak.rps, 1), "half_load_rps": round(half.rps, 1),
            "p50_ms": half.p50_ms, "p99_ms": half.p99_ms,
            "saturated_p50_ms": peak.p50_ms, "saturated_p99_ms": peak.p99_ms}  # fmt: skip


def _update(settings: Settings, factors: dict[str, Any], events: int) -> float:
    """One updater process draining `events` skewed purchases of this model's customers."""
    from recsys_bench.stack import child_env
    from recsys_bench.streaming import fill_topic, skewed_events, updater_throughput

    batch = skewed_events(factors["user_ids"], factors["item_ids"], events, seed=11)
    topic = fill_topic(settings.kafka_bootstrap_servers or "", settings, batch)
    env = child_env(settings)
    rate, _ = updater_throughput(env, topic, events, settings.data_dir / "updater.log")
    return round(rate, 1)


# ---------------------------------------------------------------- output


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.1f}{unit}"


def table(results: list[ShapeResult]) -> Table:
    out = Table(title="the batch at the data set's shape: seconds, memory, sizes, serving")
    out.add_column("")
    for r in results:
        out.add_column(f"{r.shape} ({r.trainer})", justify="right")
    step_names = list(dict.fromkeys(s for r in results for s in r.steps))
    for step in step_names:
        out.add_row(f"step: {step} (s)", *(_fmt(r.steps.get(step)) for r in results))
    out.add_row("[bold]batch total (s)[/bold]", *(_fmt(r.batch_s) for r in results))
    out.add_row(
        "purchases / customers / articles",
        *(f"{r.transactions:,} / {r.customers:,} / {r.articles:,}" for r in results),
    )
    out.add_row(
        "interactions / user vectors / item vectors",
        *(f"{r.interactions:,} / {r.users:,} / {r.items:,}" for r in results),
    )
    roles = list(dict.fromkeys(role for r in results for p in r.peak_mib.values() for role in p))
    for phase in ("batch", "serve", "update"):
        for role in roles:
            values = [r.peak_mib.get(phase, {}).get(role) for r in results]
            if any(v is not None for v in values):
                out.add_row(f"peak RSS, {phase}: {role} (MiB)", *(_fmt(v) for v in values))
    for layer in ("bronze", "silver", "gold"):
        out.add_row(f"lake {layer} (MiB)", *(_fmt(r.lake_mib.get(layer)) for r in results))
    out.add_row("index shard (MiB)", *(_fmt(r.index_mib) for r in results))
    for key, label in (("used_memory_mib", "Valkey used memory (MiB)"),
                       ("bytes_per_customer_beyond_vector_and_history",
                        "Valkey bytes per customer beyond vector + history")):  # fmt: skip
        out.add_row(label, *(_fmt(r.valkey.get(key)) for r in results))
        out.add_row(f"{label}, after the updater",
                    *(_fmt(r.valkey_after_updates.get(key)) for r in results))  # fmt: skip
    for key, label in (
        ("max_rps", "/recommend max (req/s)"),
        ("p50_ms", "/recommend p50 at half load (ms)"),
        ("p99_ms", "/recommend p99 at half load (ms)"),
    ):
        out.add_row(label, *(_fmt(r.recommend.get(key)) for r in results))
    out.add_row("updater (events/s)", *(_fmt(r.updater_events_per_s) for r in results))
    out.add_row("Valkey restart on its AOF (s)", *(_fmt(r.valkey_restart_s) for r in results))
    for part in ("total", "redis", "delta", "vacuum", "factors"):
        out.add_row(f"one erasure: {part} (s)",
                    *(_fmt(r.erasure_s.get(part)) for r in results))  # fmt: skip
    ndcg = holdout_row(results)
    if ndcg is not None:
        out.add_row("holdout NDCG@10", *ndcg)
    return out


def holdout_row(results: list[ShapeResult]) -> list[str] | None:
    values = [r.holdout.get("holdout_ndcg_at_10") for r in results]
    if all(v is None for v in values):
        return None
    return ["-" if v is None else f"{v:.4f}" for v in values]


def p99_ratio(results: list[ShapeResult]) -> float | None:
    """/recommend p99 at the full shape over the tenth's, when both ran."""
    by = {r.shape: r.recommend.get("p99_ms") for r in results}
    full, tenth = by.get("hm-full"), by.get("hm-tenth")
    return None if not full or not tenth else round(full / tenth, 2)
