"""`recsys bench stream`: the updater's throughput with one process, and freshness at a
steady event rate, on the embedded stack.

Throughput: N purchase events (skewed customers and articles of the trained model, a
tenth of them by customers with no vector yet) wait on a topic of their own; one
`recsys updater` process starts and consumes them. Events/s is N over the time from its
first applied event to its last, read from its own Prometheus counter.

Freshness: the API (`recsys serve`, two workers) and one updater run as processes; wrk
posts purchases at a steady rate (a C load generator: the Python simulator would take a
core of its own at this rate), and three probers each post one more every 0.1 s and
poll GET /recommend until that event's id comes back as `applied_event_id`.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from rich.table import Table

from recsys.bus import KafkaBus, client_config
from recsys.engines.process import ManagedProcess, free_port, recsys_command, spawn
from recsys.events import Event
from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

THROUGHPUT_TARGET = 10_000.0
FRESHNESS_P99_TARGET_MS = 50.0
# Probers running side by side, each on customers of its own: ~500 probes in a 20 s run,
# so p99 is not the second-slowest of ~150.
PROBERS = 3


@dataclass
class StreamBench:
    events: int
    updater_events_per_s: float = 0.0  # RECSYS_ONLINE_UPDATE=ema
    updater_seconds: float = 0.0
    # The same events drained again by an updater folding in (RECSYS_ONLINE_UPDATE=fold_in,
    # the default recency form): fold-in reads each customer's history and solves.
    fold_in_events_per_s: float = 0.0
    fold_in_seconds: float = 0.0
    # What the batch chose for the version (RECSYS_ONLINE_UPDATE=auto); the freshness run
    # serves with it.
    chosen_update: str | None = None
    freshness_rate_per_s: float = 0.0
    freshness: dict[str, Any] = field(default_factory=dict)
    note: str = (
        "updater, broker, Redis, API and load generator share the machine's cores; "
        "one updater process"
    )


def skewed_events(
    customers: np.ndarray[Any, Any], articles: np.ndarray[Any, Any], n: int, seed: int
) -> list[Event]:
    """n purchases: customers and articles drawn with Zipf-like weights; a tenth by new
    customers (their first purchase gives them a vector)."""
    rng = np.random.default_rng(seed)

    def weights(size: int) -> np.ndarray[Any, Any]:
        w: np.ndarray[Any, Any] = 1.0 / np.arange(1, size + 1) ** 0.8
        return w / float(w.sum())

    who = rng.choice(len(customers), size=n, p=weights(len(customers)))
    what = rng.choice(len(articles), size=n, p=weights(len(articles)))
    run = uuid.uuid4().hex[:6]
    events = []
    for i in range(n):
        customer = str(customers[who[i]]) if i % 10 else f"bench-new-{run}-{i % 5_000}"
        events.append(
            Event(event_id=f"b{run}-{i}", customer_id=customer, article_id=str(articles[what[i]]))
        )
    return events


def fill_topic(bootstrap: str, settings: Settings, events: list[Event]) -> str:
    """A topic of its own (the events topic's partition count), filled with events."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(bootstrap, settings))
    admin.create_topics([NewTopic(topic, settings.events_partitions, 1)])[topic].result(10)
    producer = KafkaBus(bootstrap, settings).producer(**{"linger.ms": 20})
    for i, event in enumerate(events):
        while True:
            try:
                producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
                break
            except BufferError:  # the local queue (100k messages) is full: let it drain
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("the broker did not take every benchmark event")
    return topic


def _processed(metrics_url: str) -> float:
    try:
        text = httpx.get(metrics_url, timeout=2).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for match in re.finditer(r'^events_processed_total\{outcome="(\w+)"\} ([\d.e+]+)$', text,
                             re.MULTILINE):  # fmt: skip
        total += float(match.group(2))
    return total


def updater_throughput(
    env: dict[str, str], topic: str, n: int, log: Path, update: str = "ema"
) -> tuple[float, float]:
    """(events/s, seconds) of one updater process draining n events from topic, moving
    vectors by `update` (RECSYS_ONLINE_UPDATE)."""
    port = free_port()
    own_env = {
        **env,
        "RECSYS_ONLINE_UPDATE": update,
        "RECSYS_EVENTS_TOPIC": topic,
        "RECSYS_UPDATER_GROUP": f"bench-{topic}-{update}",
        "RECSYS_UPDATER_METRICS_PORT": str(port),
    }
    process = spawn("bench-updater", recsys_command("updater"), env=own_env,
                    log_path=log)  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 120
        first: float | None = None
        while time.monotonic() < deadline:
            done = _processed(url)
            now = time.perf_counter()
            if done > 0 and first is None:
                first = now
                first_count = done
            if done >= n and first is not None:
                seconds = now - first
                if done - first_count < n / 2:
                    raise RuntimeError(
                        f"the updater applied {n} events before they could be timed: "
                        "run with more --events"
                    )
                return (n - first_count) / seconds, seconds
            if not process.alive():
                raise RuntimeError(f"the updater died:\n{process.log_text()[-2000:]}")
            time.sleep(0.2)  # a light poll: the metrics thread shares the GIL
        raise RuntimeError(f"the updater did not process {n} events within 120 s")
    finally:
        process.stop()


def start_api(env: dict[str, str], log: Path) -> tuple[ManagedProcess, str]:
    """`recsys serve` on a free port, once it is ready to recommend."""
    from recsys_bench.serving import start_server

    port = free_port()
    argv = recsys_command("serve", "--port", str(port))
    return start_server(argv, env, port, log, "/health/ready"), f"http://127.0.0.1:{port}"


def table(result: StreamBench) -> Table:
    out = Table(title="stream: one updater process, and freshness at a steady rate")
    for column in ("measure", "value", "target"):
        out.add_column(column, justify="left" if column == "measure" else "right")
    out.add_row(
        f"updater events/s ({result.events:,} events), EMA",
        f"{result.updater_events_per_s:,.0f}",
        f">= {THROUGHPUT_TARGET:,.0f}",
    )
    ratio = (
        result.fold_in_events_per_s / result.updater_events_per_s
        if result.updater_events_per_s
        else 0
    )
    out.add_row(
        "updater events/s, fold-in (x the EMA's)",
        f"{result.fold_in_events_per_s:,.0f} ({ratio:.2f}x)",
        f">= {THROUGHPUT_TARGET:,.0f}",
    )
    out.add_row("update the batch chose (freshness run)", result.chosen_update or "EMA", "-")
    fresh = result.freshness
    if fresh:
        rate = f"at {result.freshness_rate_per_s:.0f} events/s"
        for name, target in (("p50_ms", "-"), ("p99_ms", f"<= {FRESHNESS_P99_TARGET_MS:.0f}")):
            value = fresh.get(name)
            shown = "-" if value is None else f"{value:.1f}"
            out.add_row(f"freshness {name[:3]} ms {rate}", shown, target)
        out.add_row("freshness probes (timed out)",
                    f"{fresh.get('probed', 0)} ({fresh.get('timed_out', 0)})", "-")  # fmt: skip
        slowest = ", ".join(f"{ms:.0f} ms at {at:.1f} s" for at, ms in fresh.get("slowest", [])[:3])
        out.add_row("slowest probes (when in the run)", slowest or "-", "-")
    return out


def run(
    settings: Settings,
    *,
    events: int,
    customers: int,
    articles: int,
    transactions: int,
    work_dir: Path,
    freshness_rate: float = 500.0,
    freshness_duration_s: float = 20.0,
    spark: SparkSession | None = None,
) -> StreamBench:
    """Generate, train (on `spark` if given), then measure: everything in its own data dir
    and engines."""
    from recsys.model_store import read_factors, read_manifest
    from recsys_bench.stack import trained_stack

    result = StreamBench(events)
    with trained_stack(settings, work_dir, "stream", customers=customers, articles=articles,
                       transactions=transactions, seed=5, spark=spark) as stack:  # fmt: skip
        own, data_dir = stack.settings, stack.settings.data_dir
        factors = read_factors(own.models_dir, stack.report.version)
        env = stack.child_env()
        bootstrap = stack.endpoints.require_kafka()
        # One pass per update, each on a topic of its own with fresh event ids (the same
        # customers and articles drawn: the same seed), so each applies every event anew.
        for update in ("ema", "fold_in"):
            planned = skewed_events(factors["user_ids"], factors["item_ids"], events, seed=9)
            topic = fill_topic(bootstrap, own, planned)
            log = data_dir / f"bench-updater-{update}.log"
            measured = updater_throughput(env, topic, events, log, update)
            if update == "ema":
                result.updater_events_per_s, result.updater_seconds = measured
            else:
                result.fold_in_events_per_s, result.fold_in_seconds = measured
        chosen = read_manifest(own.models_dir, stack.report.version).online_update
        result.chosen_update = chosen.chosen if chosen is not None else None
        rng = np.random.default_rng(17)
        some_customers, some_articles = (
            [str(x) for x in rng.choice(ids, min(2_000, len(ids)), replace=False)]
            for ids in (factors["user_ids"], factors["item_ids"])
        )
        fresh = freshness_at_rate(env, freshness_rate, freshness_duration_s, data_dir,
                                  some_customers, some_articles)  # fmt: skip
        result.freshness_rate_per_s = fresh.background_events_per_s
        result.freshness = asdict(fresh)
    return result


@dataclass(frozen=True)
class Freshness:
    background_events_per_s: float  # what wrk sustained
    probed: int
    timed_out: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # The slowest probes, (seconds into the run, ms): whether stalls cluster in time.
    slowest: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def of(cls, sustained: float, probes: list[Probe], keep: int = 8) -> Freshness:
        seen = sorted(((p.seconds * 1000, p.at_s) for p in probes if p.seconds is not None),
                      reverse=True)  # fmt: skip
        values = [ms for ms, _ in seen]
        return cls(
            background_events_per_s=sustained,
            probed=len(probes),
            timed_out=len(probes) - len(seen),
            p50_ms=float(np.percentile(values, 50)) if values else None,
            p99_ms=float(np.percentile(values, 99)) if values else None,
            max_ms=values[0] if values else None,
            slowest=[(round(at, 2), round(ms, 1)) for ms, at in seen[:keep]],
        )


def purchase_script(customers: list[str], articles: list[str], folder: Path,
                    delay_ms: float) -> Path:  # fmt: skip
    """A wrk script posting purchases of random customers and articles, each connection
    pausing delay_ms on average (Poisson) between them."""

    def lua_list(values: list[str]) -> str:
        return "{" + ",".join(json.dumps(v) for v in values) + "}"

    script = folder / "purchases.lua"
    script.write_text("\n".join([
        "math.randomseed(11)",
        f"local customers = {lua_list(customers)}",
        f"local articles = {lua_list(articles)}",
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        "request = function()",
        '  local body = string.format(\'{"customer_id": "%s", "article_id": "%s"}\',',
        "    customers[math.random(#customers)], articles[math.random(#articles)])",
        '  return wrk.format("POST", "/events/purchase", nil, body)',
        "end",
        "delay = function()",
        f"  return -math.log(1 - math.random()) * {delay_ms:.3f}",
        "end",
    ]) + "\n")  # fmt: skip
    return script


@dataclass(frozen=True)
class WrkPurchases:
    """wrk posting purchases at a rate set by each connection's mean pause."""

    url: str
    customers: list[str]
    articles: list[str]
    folder: Path
    connections: int

    def run(self, delay_ms: float, duration_s: float) -> float:
        """Purchases per second wrk sustained (errors fail loudly)."""
        from recsys_bench.serving import require_wrk

        script = purchase_script(self.customers, self.articles, self.folder, delay_ms)
        argv = [require_wrk(), "-t1", f"-c{self.connections}", f"-d{max(1, int(duration_s))}s",
                "-s", str(script), self.url]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60,
                             check=True).stdout  # fmt: skip
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw errors posting purchases:\n{out}")
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if rate is None:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        return float(rate.group(1))


@dataclass(frozen=True)
class Probe:
    at_s: float  # when its purchase was acknowledged, from the start of the run
    seconds: float | None  # from the 202 until GET /recommend showed it; None: timed out


def probe_freshness(
    url: str, customers: list[str], articles: list[str], stop: threading.Event,
    started: float, seed: int, timeout_s: float = 5.0, every_s: float = 0.1,
) -> list[Probe]:  # fmt: skip
    """Until stop: post a purchase, then poll GET /recommend every 2 ms until it shows the
    event as applied; the time from the 202 to that answer."""
    rng = np.random.default_rng(seed)
    found: list[Probe] = []
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            customer = customers[int(rng.integers(len(customers)))]
            event_id = f"probe-{uuid.uuid4().hex[:12]}"
            body = {"customer_id": customer, "event_id": event_id,
                    "article_id": articles[int(rng.integers(len(articles)))]}  # fmt: skip
            if client.post("/events/purchase", json=body).status_code != 202:
                raise RuntimeError("the API refused a probe purchase")
            accepted = time.perf_counter()
            seen: float | None = None
            while time.perf_counter() - accepted < timeout_s:
                answer = client.get(f"/recommend/{customer}", params={"k": 1}).json()
                if answer.get("applied_event_id") == event_id:
                    seen = time.perf_counter() - accepted
                    break
                time.sleep(0.002)
            found.append(Probe(accepted - started, seen))
            stop.wait(every_s)
    return found


def freshness_at_rate(
    env: dict[str, str],
    rate: float,
    duration_s: float,
    data_dir: Path,
    customers: list[str],
    articles: list[str],
) -> Freshness:
    """The API (two workers) and one updater as processes; wrk posts purchases at about
    `rate` (random customers and articles, Poisson pauses); meanwhile a prober posts one
    purchase every 0.1 s and times how long until GET /recommend shows it applied (PROBERS
    of them, each with customers of its own)."""
    api, url = start_api({**env, "RECSYS_API_WORKERS": "2"}, data_dir / "bench-api.log")
    updater = spawn(
        "bench-updater-live",
        recsys_command("updater"),
        env={**env, "RECSYS_UPDATER_METRICS_PORT": str(free_port())},
        log_path=data_dir / "bench-updater-live.log",
    )
    try:
        wait_applied(url, customers[0], articles[0], timeout_s=60)  # it owns its partitions
        connections = 16
        # The prober's customers are its own: a background purchase of a probed customer
        # applied after the probe's would replace its id in applied_event_id for good.
        background, probed = customers[: len(customers) // 2], customers[len(customers) // 2 :]
        wrk = WrkPurchases(url, background, articles, data_dir, connections)
        # Each connection's cycle is its pause plus the response time: a short run
        # measures the latter, so the pause can make up the target rate.
        calibration = wrk.run(connections * 1000.0 / rate, 3.0)
        latency_ms = max(0.0, connections * 1000.0 / calibration - connections * 1000.0 / rate)
        delay_ms = max(0.1, connections * 1000.0 / rate - latency_ms)
        stop = threading.Event()
        probes: list[Probe] = []
        started = time.perf_counter()
        probers = [
            threading.Thread(
                target=lambda own, seed: probes.extend(
                    probe_freshness(url, own, articles, stop, started, seed)
                ),
                args=(probed[i::PROBERS], 13 + i),
            )
            for i in range(PROBERS)
        ]
        for prober in probers:
            prober.start()
        try:
            sustained = wrk.run(delay_ms, duration_s)
        finally:
            stop.set()
            for prober in probers:
                prober.join(30)
        return Freshness.of(sustained, probes)
    finally:
        updater.stop()
        api.stop()


def wait_applied(url: str, customer: str, article: str, timeout_s: float) -> None:
    """Post a purchase and wait until /recommend shows it applied."""
    body = {"customer_id": customer, "article_id": article,
            "event_id": f"warm-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    httpx.post(f"{url}/events/purchase", json=body, timeout=10).raise_for_status()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = httpx.get(f"{url}/recommend/{customer}", params={"k": 1}, timeout=5)
        if got.json().get("applied_event_id") == body["event_id"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the updater applied no event within {timeout_s:.0f} s")
