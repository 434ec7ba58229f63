"""The embedded stack a benchmark measures: generated data, its own engines and data
dir, and one batch run that makes a model version live."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batch.pipeline import BatchReport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
from recsys.engines.embedded import Endpoints
from recsys.settings import Settings
from recsys.user_store import RedisUserStore


@dataclass(frozen=True)
class BenchStack:
    settings: Settings  # its own data dir, naming the running engines
    endpoints: Endpoints
    input_dir: Path
    report: BatchReport

    def child_env(self) -> dict[str, str]:
        """The environment of a `recsys` child process on this stack."""
        return child_env(self.settings)


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a `recsys` child process on a benchmark's engines (the
    settings name them)."""
    return {
        **os.environ,
        "RECSYS_DATA_DIR": str(settings.data_dir),
        # The benchmark's own loopback API takes every call with no key, and all of them
        # come from one address: no anonymous limit, which would throttle the load the
        # benchmark measures (docs/security.md).
        "RECSYS_AUTH_DISABLED": "true",
        "RECSYS_RATE_LIMIT_ANONYMOUS_PER_S": "0",
        **Endpoints(settings.redis_url, settings.kafka_bootstrap_servers).as_env(),
    }


def bench_input(
    work_dir: Path, name: str, *, customers: int, articles: int, transactions: int, seed: int
) -> Path:
    """Generated H&M-schema CSVs of this size, made once and kept in work_dir."""
    from batch.generate import generate

    input_dir = work_dir / f"{name}-{articles}-{customers}-{transactions}"
    if not (input_dir / "transactions_train.csv").exists():
        generate(input_dir, customers=customers, articles=articles, transactions=transactions,
                 seed=seed)  # fmt: skip
    return input_dir


def fresh_data_dir(settings: Settings, work_dir: Path, name: str) -> Settings:
    """Settings with an emptied data dir of their own and no engine named yet."""
    data_dir = work_dir / f"{name}-run"
    shutil.rmtree(data_dir, ignore_errors=True)
    return settings.model_copy(
        update={"data_dir": data_dir, "redis_url": None, "kafka_bootstrap_servers": None,
                "qdrant_url": None}
    )  # fmt: skip


def train_live(
    settings: Settings, input_dir: Path, name: str, spark: SparkSession | None = None
) -> BatchReport:
    """One batch run on the engines `settings` names, making its version live; on a Spark
    session of its own unless one is given (which it leaves running)."""
    from batch.pipeline import run_batch
    from recsys.progress import Steps
    from recsys.spark import spark_session
    from recsys.stores import redis_client

    client = redis_client(settings.redis_url or "", 60)
    try:
        with (
            (
                contextlib.nullcontext(spark)
                if spark
                else spark_session(settings, f"recsys-bench-{name}")
            ) as session,
            Steps(enabled=False) as steps,
        ):
            return run_batch(settings, input_dir, RedisUserStore(client), steps, session)
    finally:
        client.close()


@contextmanager
def trained_stack(
    settings: Settings,
    work_dir: Path,
    name: str,
    *,
    customers: int,
    articles: int,
    transactions: int,
    seed: int,
    spark: SparkSession | None = None,
) -> Iterator[BenchStack]:
    """Generate the data once per size (kept in work_dir), start fresh engines in
    `work_dir/<name>-run`, train and publish (on `spark` if given, else a session of its
    own); the engines stop when the block ends."""
    from recsys.bus import ensure_topics
    from recsys.engines.embedded import EmbeddedEngines

    input_dir = bench_input(work_dir, name, customers=customers, articles=articles,
                            transactions=transactions, seed=seed)  # fmt: skip
    own = fresh_data_dir(settings, work_dir, name)
    with EmbeddedEngines(own, {"redis", "kafka"}) as endpoints:
        ensure_topics(endpoints.require_kafka(), own)
        resolved = own.model_copy(
            update={"redis_url": endpoints.redis_url,
                    "kafka_bootstrap_servers": endpoints.kafka_bootstrap}
        )  # fmt: skip
        report = train_live(resolved, input_dir, name, spark)
        yield BenchStack(resolved, endpoints, input_dir, report)
