"""The scale-out path for real: a Spark standalone master and worker on loopback, and
the batch trains its model on that cluster with MLlib ALS, then serves it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest
import redis

from batch.pipeline import run_batch
from recsys import keys
from recsys.engines.process import ManagedProcess, free_port, listens_on, spawn
from recsys.model_store import read_manifest
from recsys.progress import Steps
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
def spark_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
        yield url
    finally:
        if worker is not None:
            worker.stop()
        master.stop()


def test_batch_trains_with_mllib_on_a_standalone_cluster(
    spark_master: str, settings: Settings, input_dir: Path, tmp_path: Path
) -> None:
    # Its own Redis database and data dir, so the suite's live model stays as it is.
    assert settings.redis_url
    own = settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "redis_url": settings.redis_url.rsplit("/", 1)[0] + "/3",
            "trainer": "spark",
            "spark_master": spark_master,
            "spark_driver_memory": "1g",
            "spark_als_rank": 8,
            "spark_als_max_iter": 5,
        }
    )
    client: redis.Redis = redis_client(own.redis_url or "", 10)
    try:
        started = time.perf_counter()
        with Steps(enabled=False) as steps:
            report = run_batch(own, input_dir, client, steps)
        assert time.perf_counter() - started < 300
        manifest = read_manifest(own.models_dir, report.version)
        assert manifest.trainer == "spark"
        assert manifest.params["rank"] == 8
        assert manifest.params["master"] == spark_master
        assert manifest.dim == 8
        assert client.get(keys.LIVE_VERSION) == report.version.encode()
    finally:
        client.flushdb()
        client.close()
