"""`recsys bench batch`: the whole pipeline on generated data, time per step."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from batch.generate import generate
from batch.pipeline import run_batch
from recsys.engines.embedded import EmbeddedEngines
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.spark import spark_session
from recsys.stores import redis_client
from recsys.user_store import RedisUserStore


@dataclass
class BatchTiming:
    transactions: int
    customers: int
    articles: int
    generate_s: float
    total_s: float
    steps: dict[str, float] = field(default_factory=dict)


def bench_batch(settings: Settings, sizes: list[int], work_dir: Path) -> list[BatchTiming]:
    """For each size: generate the CSVs, then CSV to a live version on a fresh Valkey.

    One Spark session serves every size (a process holds one JVM); starting it is part of
    the cost of a run, so its time is a step of every row."""
    rows = []
    started = time.perf_counter()
    with spark_session(settings, "recsys-bench-batch") as spark:
        spark_start_s = time.perf_counter() - started
        for n in sizes:
            customers, articles = max(1_000, n // 20), max(500, n // 50)
            input_dir = work_dir / f"hm-{n}"
            started = time.perf_counter()
            if not (input_dir / "transactions_train.csv").exists():
                generate(input_dir, customers=customers, articles=articles, transactions=n, seed=1)
            generate_s = time.perf_counter() - started
            run_dir = work_dir / f"run-{n}"
            shutil.rmtree(run_dir, ignore_errors=True)
            own = settings.model_copy(update={"data_dir": run_dir, "redis_url": None})
            with EmbeddedEngines(own, {"redis"}) as endpoints:
                client = redis_client(endpoints.require_redis(), 60)
                try:
                    started = time.perf_counter()
                    with Steps(enabled=False) as steps:
                        report = run_batch(own, input_dir, RedisUserStore(client), steps, spark)
                    total = spark_start_s + time.perf_counter() - started
                finally:
                    client.close()
            timed = {"start Spark": spark_start_s, **report.step_seconds}
            rows.append(BatchTiming(n, customers, articles, generate_s, total, timed))
            shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def table(rows: list[BatchTiming]) -> Table:
    out = Table(title="batch pipeline: CSV to a live model version, seconds per step")
    out.add_column("step")
    for r in rows:
        out.add_column(f"{r.transactions:,} tx", justify="right")
    for step in rows[0].steps if rows else []:
        out.add_row(step, *(f"{r.steps.get(step, 0.0):.1f}" for r in rows))
    out.add_row("[bold]total[/bold]", *(f"[bold]{r.total_s:.1f}[/bold]" for r in rows))
    out.add_row("(generating the CSVs)", *(f"{r.generate_s:.1f}" for r in rows))
    return out
