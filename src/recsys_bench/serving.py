"""`recsys bench serve`: the API against a bare FastAPI endpoint, side by side in one run.

Both run as `recsys serve`-style uvicorn processes with the same settings; the bare one
answers a fixed Recommendations body taken from a real response, encoded per request the
same way (orjson from dicts). wrk (another process, sharing the 2 cores: say so in the
results) finds each variant's maximum throughput, then holds about half of it (a pause per
connection) and reports p50/p99 there. ANN recall@10 compares the served HNSW search
with exact search on the trained embeddings.

Two floors show how much of each ratio is the engine's: the bare endpoint plus the index
search the API runs (nearest-10, and MMR), its answer discarded. No variant can beat its
floor, whatever the service code around the query costs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from rich.table import Table

from recsys.blend import blends
from recsys.engines.process import ManagedProcess, free_port, recsys_command, spawn
from recsys.index.base import FILTERED_SEARCH_EF, SEARCH_EF, Beams

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MMR_LAMBDA = 0.7
VARIANTS: dict[str, str] = {
    "plain": "k=10&diversity_lambda=1",
    "filter": "k=10&diversity_lambda=1&product_group={group}",
    "mmr": f"k=10&diversity_lambda={MMR_LAMBDA}",
    "explain": "k=10&diversity_lambda=1&explain=true",
}
# Each floor's path on the yardstick server, and the diversity_lambda of its index search
# (1: the plain nearest-neighbour query).
FLOORS: dict[str, tuple[str, float]] = {
    "floor: bare + index query": ("/bare/query", 1.0),
    "floor: bare + index MMR": ("/bare/mmr", MMR_LAMBDA),
}
TARGETS = {"plain": 0.2, "filter": 0.12, "mmr": 0.15, "explain": 0.12}
# The plain query for the sampled customers whose vector the API blends with trending
# (RECSYS_BLEND_MAX_PURCHASES or fewer purchases); measured, no target.
BLEND = "blend (one or two purchases)"


class WrkMissingError(RuntimeError):
    """wrk is needed to load the servers (apt-get install wrk)."""


@dataclass
class VariantResult:
    name: str
    max_rps: float
    ratio_to_bare: float | None = None
    target_ratio: float | None = None
    half_load_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    bare_max_rps: float | None = None  # the yardstick's maximum measured right before


@dataclass
class ServeBench:
    articles: int
    customers: int
    transactions: int
    duration_s: float
    connections: int
    workers: int
    variants: list[VariantResult] = field(default_factory=list)
    # The bare endpoint plus the index search alone: what no variant can beat.
    floors: list[VariantResult] = field(default_factory=list)
    ann_recall_at_10: AnnRecall | None = None
    blend_customers: int = 0  # of the sampled, those the blend variant asks for
    # The beams the batch chose for the version (recsys.index.beams).
    search_ef: int = SEARCH_EF
    filtered_search_ef: int = FILTERED_SEARCH_EF
    note: str = (
        "server, load generator and engines share the machine's cores; "
        "ratios are measured side by side in one run"
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissingError("wrk is not installed: apt-get install wrk")
    return path


@dataclass(frozen=True)
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float


def wrk_script(
    path: str, customers: list[str] | None, query: str, folder: Path, delay_ms: float = 0.0
) -> Path:
    """A wrk script: GET path, or per request a random customer's /recommend when
    customers are given; each connection pauses delay_ms on average between requests (to
    hold a rate)."""
    lines = ["math.randomseed(7)"]
    if customers:
        ids = ",".join(json.dumps(c) for c in customers)
        lines += [
            f"local ids = {{{ids}}}",
            "request = function()",
            f'  return wrk.format("GET", "/recommend/" .. ids[math.random(#ids)] .. "?{query}")',
            "end",
        ]
    else:
        lines += ["request = function()", f'  return wrk.format("GET", "{path}")', "end"]
    if delay_ms > 0:
        # Exponential pauses (Poisson arrivals): equal pauses would send the connections'
        # requests in bursts and measure the queue of a burst, not the service.
        lines += ["delay = function()", f"  return -math.log(1 - math.random()) * {delay_ms:.3f}",
                  "end"]  # fmt: skip
    script = folder / f"wrk-{len(list(folder.iterdir()))}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise RuntimeError(f"wrk latency not understood: {text}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def run_wrk(url: str, script: Path, duration_s: float, connections: int) -> WrkRun:
    """What wrk measured: req/s and latency percentiles (errors fail loudly)."""
    argv = [require_wrk(), "-t1", f"-c{connections}", f"-d{int(duration_s)}s", "--latency",
            "-s", str(script), url]  # fmt: skip
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=True
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    if rate is None or p50 is None or p99 is None:
        raise RuntimeError(f"wrk printed no rate or latency:\n{out}")
    return WrkRun(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)))


HALF_LOAD_CONNECTIONS = 8
WARM_UP_S = 3.0
CALIBRATE_S = 2.0


def at_max_and_half(
    url: str, customers: list[str] | None, query: str, run: RunShape
) -> tuple[WrkRun, WrkRun]:
    """Saturate, then hold about half that rate: a few connections each pause so that
    together they send half the maximum (wrk reports the rate reached).

    A connection sends its next request a pause after the last answer, so its cycle is
    the pause plus the request's own time: a pause of connections / rate alone holds
    less than the rate (~40% of the maximum instead of half). A short run at that pause
    measures the cycle, and the pause is shortened by the time the requests took."""
    path = httpx.URL(url).path
    script = wrk_script(path, customers, query, run.folder)
    peak = run_wrk(url, script, run.duration_s, run.connections)
    cycle_ms = HALF_LOAD_CONNECTIONS * 1000.0 / (peak.rps / 2)
    probe_script = wrk_script(path, customers, query, run.folder, cycle_ms)
    probe = run_wrk(url, probe_script, min(CALIBRATE_S, run.duration_s), HALF_LOAD_CONNECTIONS)
    took_ms = HALF_LOAD_CONNECTIONS * 1000.0 / probe.rps - cycle_ms if probe.rps > 0 else 0.0
    script = wrk_script(path, customers, query, run.folder, max(0.0, cycle_ms - took_ms))
    return peak, run_wrk(url, script, run.duration_s, HALF_LOAD_CONNECTIONS)


@dataclass(frozen=True)
class RunShape:
    duration_s: float
    connections: int
    folder: Path


def start_server(
    argv: list[str], env: dict[str, str], port: int, log: Path, ready_path: str = "/health/live"
) -> ManagedProcess:
    """A server process on 127.0.0.1:port, returned once ready_path answers 200."""
    process = spawn("bench-server", argv, env=env, log_path=log)

    def answers() -> bool:
        try:
            url = f"http://127.0.0.1:{port}{ready_path}"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process.wait_ready(answers, timeout=120)
    return process


def bare_fixture(api_url: str, customer: str, folder: Path) -> Path:
    body = httpx.get(f"{api_url}/recommend/{customer}?k=10&diversity_lambda=1", timeout=10)
    body.raise_for_status()
    path = folder / "bare.json"
    path.write_text(body.text)
    return path


def measure(
    api_url: str,
    bare_url: str,
    customers: list[str],
    group: str,
    run: RunShape,
    blended: list[str] | None = None,
) -> tuple[list[VariantResult], list[VariantResult]]:
    """The variants (the bare row first; the blend's last, when `blended` names
    customers) and the floors. Each ratio is to the bare
    endpoint's maximum measured right before it: a shared machine drifts over the minutes
    a run takes (the yardstick moved by up to 40% within one run). The bare row reports
    the mean of those maxima."""
    bare_script = wrk_script("/bare", None, "", run.folder)
    # A server's first seconds under load run slower (its allocator and caches warming):
    # neither the yardstick nor the first variant is measured cold.
    warm_up_s = min(WARM_UP_S, run.duration_s)
    run_wrk(f"{bare_url}/bare", bare_script, warm_up_s, run.connections)
    api_script = wrk_script("/", customers, VARIANTS["plain"], run.folder)
    run_wrk(f"{api_url}/", api_script, warm_up_s, run.connections)
    peak, half = at_max_and_half(f"{bare_url}/bare", None, "", run)
    peaks = [peak.rps]
    group_value = httpx.URL("", params={"g": group}).query.decode()[2:]
    # (name, url, customers or None for a fixed path, query, target): variants, then floors
    loads: list[tuple[str, str, list[str] | None, str, float | None]] = [
        (name, f"{api_url}/", customers, query.format(group=group_value), TARGETS[name])
        for name, query in VARIANTS.items()
    ]
    if blended:
        loads.append((BLEND, f"{api_url}/", blended, VARIANTS["plain"], None))
    variants = len(loads)
    loads += [(name, f"{bare_url}{path}", None, "", None) for name, (path, _) in FLOORS.items()]
    measured: list[VariantResult] = []
    for name, url, who, query, target in loads:
        if measured:
            peaks.append(run_wrk(f"{bare_url}/bare", bare_script, run.duration_s,
                                 run.connections).rps)  # fmt: skip
        peak_v, half_v = at_max_and_half(url, who, query, run)
        measured.append(
            VariantResult(name, peak_v.rps, peak_v.rps / peaks[-1], target, half_v.rps,
                          half_v.p50_ms, half_v.p99_ms, peaks[-1])
        )  # fmt: skip
    bare = VariantResult("bare endpoint", float(np.mean(peaks)), None, None, half.rps,
                         half.p50_ms, half.p99_ms)  # fmt: skip
    return [bare, *measured[:variants]], measured[variants:]


@dataclass(frozen=True)
class AnnRecall:
    unfiltered: float  # recall@k of the served search, no filter
    filtered_min: float  # the worst product group, filtering on it
    filtered_mean: float


def ann_recall(shard: Path, users: np.ndarray[Any, Any], beams: Beams, k: int = 10) -> AnnRecall:
    """Recall@k of the HNSW search the API runs (the version's beam per query shape)
    against exact search on the same vectors: unfiltered, and filtered on each product
    group for a fifth of the users."""
    from recsys.index.base import ItemFilter
    from recsys.index.edge import EdgeItemIndex

    def recall(rules: ItemFilter, sample: np.ndarray[Any, Any]) -> float:
        found = total = 0
        for user in sample:
            truth = {i.article_id for i in exact.search(user, k, rules)}
            got = {i.article_id for i in approx.search(user, k, rules)}
            found += len(truth & got)
            total += len(truth)
        return found / max(1, total)

    with tempfile.TemporaryDirectory(prefix="recsys-recall-") as tmp:
        approx = EdgeItemIndex("ann", shard, Path(tmp) / "a", beams=beams)
        exact = EdgeItemIndex("exact", shard, Path(tmp) / "b", exact=True)
        try:
            groups = sorted(
                {str(m.get("product_group_name")) for m in approx.catalog.all_metadata()}
            )
            per_group = [
                recall(ItemFilter(product_groups=(g,)), users[: max(1, len(users) // 5)])
                for g in groups
            ]
            return AnnRecall(
                unfiltered=recall(ItemFilter(), users),
                filtered_min=min(per_group),
                filtered_mean=float(np.mean(per_group)),
            )
        finally:
            approx.close()
            exact.close()


def table(result: ServeBench) -> Table:
    out = Table(
        title=f"serving ({result.workers} worker processes per server): max throughput "
        f"(wrk, {result.connections} connections) and latency at half of it"
    )
    for column in ("variant", "max req/s", "vs bare", "target", "half-load req/s", "p50 ms",
                   "p99 ms"):  # fmt: skip
        out.add_column(column, justify="left" if column == "variant" else "right")
    for i, v in enumerate([*result.variants, *result.floors]):
        if i == len(result.variants):
            out.add_section()  # a line between the variants and the floors
        out.add_row(
            v.name,
            f"{v.max_rps:,.0f}",
            f"{v.ratio_to_bare:.2f}x" if v.ratio_to_bare is not None else "-",
            f">= {v.target_ratio:.2f}x" if v.target_ratio is not None else "-",
            f"{v.half_load_rps:,.0f}",
            f"{v.p50_ms:.2f}",
            f"{v.p99_ms:.2f}",
        )
    return out


FIXTURE_ENV = "RECSYS_BENCH_BARE_FIXTURE"
SHARD_ENV = "RECSYS_BENCH_FLOOR_SHARD"
USERS_ENV = "RECSYS_BENCH_FLOOR_USERS"


@dataclass(frozen=True)
class Floor:
    """What the floors query: a model version's shard, and users (JSON: `vectors`, and
    `purchases`, which the query excludes as the API's does)."""

    shard: Path
    users: Path


def bare_app_from_environment() -> Any:
    """The yardstick in one of several worker processes (uvicorn's factory)."""
    import os

    from recsys.engines.process import die_with_parent

    die_with_parent(os.getppid())
    floor = (
        Floor(Path(os.environ[SHARD_ENV]), Path(os.environ[USERS_ENV]))
        if SHARD_ENV in os.environ
        else None
    )
    return create_bare_app(Path(os.environ[FIXTURE_ENV]), floor)


def create_bare_app(fixture: Path, floor: Floor | None = None) -> Any:
    """The yardstick: a FastAPI app answering a fixed Recommendations body (taken from a
    real response), encoded per request the way the API encodes it. With a floor, also
    /bare/query and /bare/mmr: the same body after the index search the API runs for a
    random user, their purchases excluded (its own shard copy, as an API worker has), the
    answer discarded."""
    import random
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from recsys.diversity import mmr_for
    from recsys.index.base import ItemFilter, Mmr
    from recsys.index.edge import EdgeItemIndex
    from serve.responses import JsonBody
    from serve.schemas import Recommendations

    body = json.loads(fixture.read_text())
    # The worker's own index copy lives as long as the app (its lifespan).
    held: list[EdgeItemIndex] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if floor is None:
            yield
            return
        # Beside the users file, in the bench's temporary folder: a worker killed before
        # its shutdown leaves no copy behind once the bench ends.
        work = Path(tempfile.mkdtemp(prefix="floor-", dir=floor.users.parent))
        try:
            held.append(EdgeItemIndex("floor", floor.shard, work))
            yield
        finally:
            for index in held:
                index.close()
            shutil.rmtree(work, ignore_errors=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/bare", response_model=Recommendations)
    async def bare() -> JsonBody:
        return JsonBody(body)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    if floor is None:
        return app
    users = json.loads(floor.users.read_text())
    asks = [
        (np.asarray(vector, dtype=np.float32), ItemFilter(exclude_ids=tuple(bought)))
        for vector, bought in zip(users["vectors"], users["purchases"], strict=True)
    ]
    pick = random.Random(7)

    def floor_route(mmr: Mmr | None) -> Callable[[], Awaitable[JsonBody]]:
        async def search_then_bare() -> JsonBody:
            vector, rules = pick.choice(asks)
            held[0].search(vector, 10, rules, mmr=mmr)
            return JsonBody(body)

        return search_then_bare

    for path, relevance in FLOORS.values():
        app.add_api_route(path, floor_route(mmr_for(10, relevance)), methods=["GET"],
                          response_model=Recommendations)  # fmt: skip
    return app


def purchases(redis_url: str, customers: list[str]) -> list[list[str]]:
    """Each customer's purchase history, as the API reads it for its exclusions."""
    from recsys import keys
    from recsys.stores import redis_client

    client = redis_client(redis_url, 30)
    try:
        pipe = client.pipeline(transaction=False)
        for customer in customers:
            pipe.zrevrange(keys.history(customer), 0, -1)
        return [[a.decode() for a in history] for history in pipe.execute()]
    finally:
        client.close()


def run(
    settings: Any,
    *,
    articles: int,
    customers: int,
    transactions: int,
    duration_s: float,
    connections: int,
    work_dir: Path,
    spark: SparkSession | None = None,
) -> ServeBench:
    """Generate, train (on `spark` if given), serve, load: everything in its own data dir
    and engines."""
    from recsys.model_layout import shard_dir
    from recsys.model_store import read_factors, read_manifest
    from recsys_bench.stack import trained_stack

    require_wrk()
    result = ServeBench(articles, customers, transactions, duration_s, connections,
                        settings.api_workers)  # fmt: skip
    with trained_stack(settings, work_dir, "serve", customers=customers, articles=articles,
                       transactions=transactions, seed=3, spark=spark) as stack:  # fmt: skip
        models, version = stack.settings.models_dir, stack.report.version
        data_dir = stack.settings.data_dir
        factors = read_factors(models, version)
        rng = np.random.default_rng(5)
        users = len(factors["user_ids"])
        picked = rng.choice(users, size=min(1_000, users), replace=False)
        sample = [str(c) for c in factors["user_ids"][picked]]
        calibration = read_manifest(models, version).index
        beams = calibration.beams if calibration else Beams()
        result.search_ef, result.filtered_search_ef = beams.unfiltered, beams.filtered
        result.ann_recall_at_10 = ann_recall(
            shard_dir(models, version), factors["user_factors"][picked], beams
        )
        env = {**stack.child_env(), "RECSYS_API_WORKERS": str(settings.api_workers)}
        with tempfile.TemporaryDirectory(prefix="recsys-bench-serve-") as tmp:
            folder = Path(tmp)
            api_port, bare_port = free_port(), free_port()
            api = start_server(recsys_command("serve", "--port", str(api_port)),
                               env, api_port, data_dir / "api.log")  # fmt: skip
            bare: ManagedProcess | None = None
            try:
                api_url = f"http://127.0.0.1:{api_port}"
                fixture = bare_fixture(api_url, sample[0], folder)
                groups = [i["metadata"]["product_group_name"]
                          for i in json.loads(fixture.read_text())["items"]]  # fmt: skip
                floor_users = folder / "users.json"
                histories = purchases(stack.settings.redis_url or "", sample)
                floor_users.write_text(json.dumps(
                    {"vectors": factors["user_factors"][picked].tolist(), "purchases": histories}
                ))  # fmt: skip
                blended = [
                    customer for customer, bought in zip(sample, histories, strict=True)
                    if blends(stack.settings.blend_trending_weight,
                              stack.settings.blend_max_purchases, len(set(bought)))
                ]  # fmt: skip
                result.blend_customers = len(blended)
                bare = start_server(
                    recsys_command("bench", "bare-server",
                     "--port", str(bare_port), "--fixture", str(fixture),
                     "--shard", str(shard_dir(models, version)), "--users", str(floor_users)),
                    env, bare_port, data_dir / "bare.log",
                )  # fmt: skip
                result.variants, result.floors = measure(
                    api_url,
                    f"http://127.0.0.1:{bare_port}",
                    sample,
                    max(set(groups), key=groups.count),
                    RunShape(duration_s, connections, folder),
                    blended,
                )
            finally:
                if bare is not None:
                    bare.stop()
                api.stop()
    return result
