"""`recsys bench serve`: the API against a bare FastAPI endpoint, side by side in one run.

Both run as `recsys serve`-style uvicorn processes with the same settings; the bare one
answers a fixed Recommendations body taken from a real response, through the same
pydantic encoding. wrk (another process, sharing the 2 cores: say so in the results)
finds each variant's maximum throughput; an open-loop generator then holds half of it
and reports p50/p99. ANN recall@10 compares the served HNSW search with exact search on
the trained embeddings.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.table import Table

from recsys.engines.process import ManagedProcess, free_port, spawn

VARIANTS: dict[str, str] = {
    "plain": "k=10&diversity_lambda=1",
    "filter": "k=10&diversity_lambda=1&product_group={group}",
    "mmr": "k=10&diversity_lambda=0.7",
    "explain": "k=10&diversity_lambda=1&explain=true",
}
TARGETS = {"plain": 0.2, "filter": 0.12, "mmr": 0.15, "explain": 0.12}


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
    errors: int = 0


@dataclass
class ServeBench:
    articles: int
    customers: int
    transactions: int
    duration_s: float
    connections: int
    variants: list[VariantResult] = field(default_factory=list)
    ann_recall_at_10: float = 0.0
    hnsw_ef: int = 128
    note: str = (
        "server, load generator and engines share the machine's cores; "
        "ratios are measured side by side in one run"
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissingError("wrk is not installed: apt-get install wrk")
    return path


def wrk_script(customers: list[str], query: str, folder: Path) -> Path:
    """A wrk script that asks for a random customer of the list on every request."""
    ids = ",".join(json.dumps(c) for c in customers)
    script = folder / f"wrk-{abs(hash(query))}.lua"
    script.write_text(
        f"local ids = {{{ids}}}\n"
        "math.randomseed(7)\n"
        "request = function()\n"
        f'  return wrk.format("GET", "/recommend/" .. ids[math.random(#ids)] .. "?{query}")\n'
        "end\n"
    )
    return script


def run_wrk(url: str, script: Path | None, duration_s: float, connections: int) -> float:
    """Requests per second wrk sustained (non-2xx answers make it fail loudly)."""
    argv = [require_wrk(), "-t1", f"-c{connections}", f"-d{int(duration_s)}s"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration_s + 60, check=True
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(match.group(1))


async def _open_loop(urls: list[str], rate: float, duration_s: float) -> tuple[list[float], int]:
    """Send at a fixed rate whatever the answers do; latency from the scheduled send."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration_s)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def one(url: str, due: float) -> None:
            nonlocal errors
            try:
                response = await client.get(url)
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - due)

        started = time.perf_counter()
        tasks = []
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(urls[i % len(urls)], due)))
        await asyncio.gather(*tasks)
    return latencies, errors


def half_load(urls: list[str], rate: float, duration_s: float) -> tuple[float, float, int]:
    latencies, errors = asyncio.run(_open_loop(urls, rate, duration_s))
    ms = np.asarray(latencies) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors


def start_server(argv: list[str], env: dict[str, str], port: int, log: Path) -> ManagedProcess:
    process = spawn("bench-server", argv, env=env, log_path=log)

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200
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
    *,
    duration_s: float,
    connections: int,
    folder: Path,
) -> list[VariantResult]:
    bare_rps = run_wrk(f"{bare_url}/bare", None, duration_s, connections)
    p50, p99, errors = half_load([f"{bare_url}/bare"], bare_rps / 2, duration_s)
    results = [VariantResult("bare endpoint", bare_rps, None, None, bare_rps / 2, p50, p99, errors)]
    for name, query in VARIANTS.items():
        filled = query.format(group=httpx.URL("", params={"g": group}).query.decode()[2:])
        script = wrk_script(customers, filled, folder)
        rps = run_wrk(f"{api_url}/", script, duration_s, connections)
        urls = [f"{api_url}/recommend/{c}?{filled}" for c in customers]
        p50, p99, errors = half_load(urls, rps / 2, duration_s)
        results.append(
            VariantResult(name, rps, rps / bare_rps, TARGETS[name], rps / 2, p50, p99, errors)
        )
    return results


def ann_recall(shard: Path, users: np.ndarray[Any, Any], k: int = 10, hnsw_ef: int = 128) -> float:
    """Recall@k of the HNSW search the API runs against exact search, same vectors."""
    from recsys.index.base import ItemFilter
    from recsys.index.edge import EdgeItemIndex

    with tempfile.TemporaryDirectory(prefix="recsys-recall-") as tmp:
        approx = EdgeItemIndex("ann", shard, Path(tmp) / "a", hnsw_ef=hnsw_ef)
        exact = EdgeItemIndex("exact", shard, Path(tmp) / "b", exact=True)
        try:
            found = total = 0
            for user in users:
                truth = {i.article_id for i in exact.search(user, k, ItemFilter())}
                got = {i.article_id for i in approx.search(user, k, ItemFilter())}
                found += len(truth & got)
                total += len(truth)
        finally:
            approx.close()
            exact.close()
    return found / max(1, total)


def table(result: ServeBench) -> Table:
    out = Table(title=f"serving: max throughput (wrk, {result.connections} connections) and "
                      "latency at half of it")  # fmt: skip
    for column in ("variant", "max req/s", "vs bare", "target", "p50 ms", "p99 ms", "errors"):
        out.add_column(column, justify="left" if column == "variant" else "right")
    for v in result.variants:
        out.add_row(
            v.name,
            f"{v.max_rps:,.0f}",
            f"{v.ratio_to_bare:.2f}x" if v.ratio_to_bare is not None else "-",
            f">= {v.target_ratio:.2f}x" if v.target_ratio is not None else "-",
            f"{v.p50_ms:.2f}",
            f"{v.p99_ms:.2f}",
            str(v.errors),
        )
    return out


def to_dict(result: ServeBench) -> dict[str, Any]:
    return asdict(result)


def python() -> str:
    return sys.executable


__all__ = ["ServeBench", "free_port", "start_server"]


def create_bare_app(fixture: Path) -> Any:
    """The yardstick: a FastAPI app answering a fixed Recommendations body (taken from a
    real response) with the same response model, hence the same encoding."""
    from fastapi import FastAPI

    from serve.schemas import Recommendations

    body = Recommendations.model_validate_json(fixture.read_text())
    app = FastAPI()

    @app.get("/bare", response_model=Recommendations)
    async def bare() -> Recommendations:
        return body

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    return app


def run(
    settings: Any,
    *,
    articles: int,
    customers: int,
    transactions: int,
    duration_s: float,
    connections: int,
    work_dir: Path,
) -> ServeBench:
    """Generate, train, serve, load: everything in its own data dir and engines."""
    import os

    from batch.generate import generate
    from batch.pipeline import run_batch
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.model_store import read_factors, shard_dir
    from recsys.progress import Steps
    from recsys.spark import spark_session
    from recsys.stores import redis_client
    from stream.bus import ensure_topics

    require_wrk()
    input_dir = work_dir / f"serve-{articles}-{customers}-{transactions}"
    if not (input_dir / "transactions_train.csv").exists():
        generate(input_dir, customers=customers, articles=articles, transactions=transactions,
                 seed=3)  # fmt: skip
    data_dir = work_dir / "serve-run"
    shutil.rmtree(data_dir, ignore_errors=True)
    own = settings.model_copy(
        update={"data_dir": data_dir, "redis_url": None, "kafka_bootstrap_servers": None,
                "qdrant_url": None}
    )  # fmt: skip
    result = ServeBench(articles, customers, transactions, duration_s, connections)
    with EmbeddedEngines(own, {"redis", "kafka"}) as endpoints:
        ensure_topics(endpoints.require_kafka(), own)
        client = redis_client(endpoints.require_redis(), 60)
        try:
            with spark_session(own, "recsys-bench-serve") as spark, Steps(enabled=False) as steps:
                report = run_batch(own, input_dir, client, steps, spark)
        finally:
            client.close()
        factors = read_factors(own.models_dir, report.version)
        rng = np.random.default_rng(5)
        picked = rng.choice(len(factors["user_ids"]), size=1_000, replace=False)
        sample = [str(c) for c in factors["user_ids"][picked]]
        result.ann_recall_at_10 = ann_recall(
            shard_dir(own.models_dir, report.version), factors["user_factors"][picked]
        )
        env = {
            **os.environ,
            "RECSYS_DATA_DIR": str(data_dir),
            "RECSYS_REDIS_URL": endpoints.require_redis(),
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": endpoints.require_kafka(),
        }
        with tempfile.TemporaryDirectory(prefix="recsys-bench-serve-") as tmp:
            folder = Path(tmp)
            api_port, bare_port = free_port(), free_port()
            api = start_server([python(), "-m", "recsys", "serve", "--port", str(api_port)],
                               env, api_port, data_dir / "api.log")  # fmt: skip
            bare: ManagedProcess | None = None
            try:
                api_url = f"http://127.0.0.1:{api_port}"
                fixture = bare_fixture(api_url, sample[0], folder)
                groups = [i["metadata"]["product_group_name"]
                          for i in json.loads(fixture.read_text())["items"]]  # fmt: skip
                bare = start_server(
                    [python(), "-m", "recsys", "bench", "bare-server", "--port", str(bare_port),
                     "--fixture", str(fixture)],
                    env, bare_port, data_dir / "bare.log",
                )  # fmt: skip
                result.variants = measure(
                    api_url,
                    f"http://127.0.0.1:{bare_port}",
                    sample,
                    max(set(groups), key=groups.count),
                    duration_s=duration_s,
                    connections=connections,
                    folder=folder,
                )
            finally:
                if bare is not None:
                    bare.stop()
                api.stop()
    return result
