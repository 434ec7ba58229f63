"""Real engines for the whole suite: one embedded Valkey and one Tansu broker, a small
generated data set, and a model trained on it. Nothing is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import psutil
import pytest
import redis
from fastapi.testclient import TestClient

from batch.generate import generate
from batch.pipeline import BatchReport, run_batch
from recsys.bus import ensure_topics
from recsys.engines.embedded import EmbeddedEngines, Endpoints
from recsys.engines.valkey_cluster import ValkeyCluster, start_valkey_cluster
from recsys.hm_schema import TRANSACTIONS_FILE
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.stores import redis_client
from recsys.user_store import RedisUserStore
from serve.app import create_app
from support import engine_processes

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SMALL = {"customers": 400, "articles": 300, "transactions": 15_000}


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recsys")


@pytest.fixture(scope="session")
def base_settings(session_dir: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=session_dir / "data",
        implicit_factors=16,
        implicit_iterations=8,
        # The suite's batch runs keep these parameters; the search has its own tests
        # (tests/batch/test_tuning.py).
        tuning=False,
        # The suite's updates are the EMA its checks compute; the batch's choice (auto,
        # the default) has its own tests (tests/batch/test_online_update.py).
        online_update="ema",
        redis_url=None,
        kafka_bootstrap_servers=None,
        qdrant_url=None,
        # The suite's clients send no key: every route open, as under the benchmarks,
        # and all from one address, so not held to the anonymous limit either.
        # tests/serve/test_access.py runs the app with keys and the default limits.
        auth_disabled=True,
        rate_limit_anonymous_per_s=0,
    )


@pytest.fixture(scope="session")
def endpoints(base_settings: Settings) -> Iterator[Endpoints]:
    with EmbeddedEngines(base_settings, {"redis", "kafka"}) as found:
        ensure_topics(found.require_kafka(), base_settings)
        yield found


@pytest.fixture(scope="session")
def settings(base_settings: Settings, endpoints: Endpoints) -> Settings:
    """Settings naming the running engines, as the CLI hands them to the app and workers."""
    return base_settings.model_copy(
        update={
            "redis_url": endpoints.redis_url,
            "kafka_bootstrap_servers": endpoints.kafka_bootstrap,
        }
    )


@pytest.fixture(scope="session")
def valkey_cluster(session_dir: Path) -> Iterator[ValkeyCluster]:
    """A three-master Valkey Cluster on loopback, for the tests that run on a cluster."""
    cluster = start_valkey_cluster(session_dir / "valkey-cluster", masters=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_conn(settings: Settings) -> Iterator[redis.Redis]:
    assert settings.redis_url
    client = redis_client(settings.redis_url, 5.0)
    yield client
    client.close()


@pytest.fixture(scope="session")
def input_dir(session_dir: Path) -> Path:
    out = session_dir / "input"
    generate(out, seed=11, **SMALL)
    return out


@pytest.fixture(scope="session")
def spark(base_settings: Settings) -> Iterator[SparkSession]:
    """One Spark session for the whole suite: a JVM has one, and starting it takes seconds."""
    from recsys.spark import SparkUnavailableError, spark_session

    own = base_settings.model_copy(
        update={
            "spark_master": "local[2]",
            "spark_driver_memory": "2g",
            # Any Spark property passes through the settings (tests/recsys/test_spark.py).
            "spark_conf": {"spark.recsys.suite": "on"},
        }
    )
    try:
        with spark_session(own, "recsys-tests") as session:
            yield session
    except SparkUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def trained(
    settings: Settings, input_dir: Path, redis_conn: redis.Redis, spark: SparkSession
) -> BatchReport:
    with Steps(enabled=False) as steps:
        return run_batch(settings, input_dir, RedisUserStore(redis_conn), steps, spark)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test may leave an engine behind."""
    mine = [p for p in engine_processes() if _descends_from_us(p)]
    if mine:
        names = ", ".join(f"{p.name()}({p.pid})" for p in mine)
        print(f"\nERROR: engine processes left behind by the suite: {names}")
        for proc in mine:
            proc.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _descends_from_us(proc: psutil.Process) -> bool:
    try:
        return any(parent.pid == psutil.Process().pid for parent in proc.parents()) or (
            proc.ppid() == 1
        )
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def api(settings: Settings, trained: BatchReport) -> Iterator[TestClient]:
    """A TestClient on the real app, whose lifespan connects to the suite's engines."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="session")
def transactions(input_dir: Path) -> pd.DataFrame:
    return pd.read_csv(input_dir / TRANSACTIONS_FILE, dtype={"article_id": str})


@pytest.fixture(scope="session")
def known_customer(transactions: pd.DataFrame) -> str:
    """The customer with the most purchases."""
    return str(transactions["customer_id"].value_counts().index[0])


@pytest.fixture
def wrk_bench() -> Iterator[None]:
    """A benchmark run under wrk (its load generator): skipped where wrk is missing, and
    it must leave no engine behind."""
    import shutil

    from support import engine_pids

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk): the benchmarks' load generator")
    before = engine_pids()
    yield
    assert engine_pids() - before == set()
