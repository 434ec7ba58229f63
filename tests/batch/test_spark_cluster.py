"""The scale-out path for real: a Spark standalone master and worker on loopback, and
the batch trains its model on that cluster with MLlib ALS, then serves it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest
import redis

from recsys import keys
from recsys.engines.process import ManagedProcess, free_port, listens_on, recsys_command, spawn
from recsys.model_store import read_manifest
from recsys.settings import Settings
from recsys.stores import redis_client

pytestmark = pytest.mark.spark


def _spark_class(name: str, args: list[str], log: Path) -> ManagedProcess:
    home = Path(pyspark.__file__).parent
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    return spawn(name, [str(home / "bin" / "spark-class"), *args], env=env, log_path=log)


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A master and a worker; yields the master's URL and the worker's work folder."""
    from recsys.spark import SparkUnavailableError, require_java

    try:
        require_java()
    except SparkUnavailableError as exc:
        pytest.skip(str(exc))
    logs = tmp_path_factory.mktemp("spark-cluster")
    port = free_port()
    master = _spark_class(
        "spark-master",
        ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(free_port())],
        logs / "master.log",
    )  # fmt: skip
    worker: ManagedProcess | None = None
    try:
        master.wait_ready(lambda: listens_on(master.pid, port), timeout=60)
        url = f"spark://127.0.0.1:{port}"
        worker = _spark_class(
            "spark-worker",
            ["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
             "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
             "--work-dir", str(logs / "work")],
            logs / "worker.log",
        )  # fmt: skip
        worker.wait_ready(
            lambda: "Successfully registered with master" in (logs / "worker.log").read_text(),
            timeout=60,
        )
        yield url, logs / "work"
    finally:
        if worker is not None:
            worker.stop()
        master.stop()


def test_batch_runs_its_jobs_and_mllib_on_a_standalone_cluster(
    spark_cluster: tuple[str, Path], settings: Settings, input_dir: Path, tmp_path: Path
) -> None:
    """`recsys batch` as a user runs it, every Spark job (ingestion, cleaning,
    interactions, trending, ALS) on the cluster, by configuration alone. Its own process:
    a JVM holds one Spark context, and the suite's is a local one."""
    spark_master, work = spark_cluster
    assert settings.redis_url
    redis_url = settings.redis_url.rsplit("/", 1)[0] + "/3"
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(tmp_path / "data"),
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_TRAINER": "spark",
        "RECSYS_SPARK_MASTER": spark_master,
        "RECSYS_SPARK_DRIVER_MEMORY": "1g",
        "RECSYS_SPARK_ALS_RANK": "8",
        "RECSYS_SPARK_ALS_MAX_ITER": "5",
        # The search would fit MLlib ALS a dozen times more on the cluster (most of this
        # test's time); it has its own tests (tests/batch/test_tuning.py).
        "RECSYS_TUNING": "false",
        # Executors run Python of their own for PySpark code: this one.
        "PYSPARK_PYTHON": sys.executable,
        "COLUMNS": "160",
    }
    client: redis.Redis = redis_client(redis_url, 10)
    try:
        result = subprocess.run(
            recsys_command("batch", "--input", str(input_dir)),
            env=env, capture_output=True, text=True, timeout=420, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        version = client.get(keys.LIVE_VERSION)
        assert version is not None
        manifest = read_manifest(tmp_path / "data" / "models", version.decode())
        assert manifest.trainer == "spark"
        assert manifest.params["rank"] == 8
        assert manifest.params["master"] == spark_master
        assert manifest.dim == 8
        assert {"bronze.transactions", "silver.interactions", "gold.trending"} <= set(
            manifest.data_version
        )
        # The cluster ran the jobs: its worker launched an executor for the application.
        assert any(work.glob("app-*/*/stderr")), "no executor ran on the worker"
    finally:
        client.flushdb()
        client.close()
