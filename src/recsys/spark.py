"""One Spark session per command, on the master the settings name (local or a cluster).

A process holds one: once stopped, PySpark's JVM gateway is gone, so a command that runs
several Spark steps keeps one session open across them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkUnavailableError(RuntimeError):
    """Spark cannot start here; the message says what to install."""


def require_java() -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise SparkUnavailableError(
            "Spark needs Java 17 or newer: install a JRE "
            "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _with_delta_spark(builder: SparkSession.Builder) -> SparkSession.Builder:
    try:
        from delta import configure_spark_with_delta_pip
    except ImportError as exc:
        raise SparkUnavailableError(
            "RECSYS_LAKE_WRITER=delta-spark needs the delta-spark package: "
            "uv sync --extra delta-spark"
        ) from exc
    builder = builder.config(
        "spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension"
    ).config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    configured: SparkSession.Builder = configure_spark_with_delta_pip(builder)
    return configured


@contextlib.contextmanager
def spark_session(settings: Settings, app_name: str = "recsys") -> Iterator[SparkSession]:
    require_java()
    from pyspark.sql import SparkSession

    # Spark otherwise binds to the first non-loopback interface it finds; here everything
    # stays on loopback unless the deployment says where the driver lives.
    driver_host = os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.driver.memory", settings.spark_driver_memory)
        # Loopback unless told otherwise: workers reach the driver on this address.
        .config("spark.driver.host", os.environ.get("SPARK_DRIVER_HOST", driver_host))
        .config("spark.driver.bindAddress", driver_host)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        # Delta (and delta-rs, which commits the files Spark writes) reads these natively.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    if settings.spark_executor_memory:
        builder = builder.config("spark.executor.memory", settings.spark_executor_memory)
    for key, value in settings.spark_conf.items():
        builder = builder.config(key, value)
    if settings.lake_writer == "delta-spark":
        builder = _with_delta_spark(builder)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # the JVM reports a failed jar download as a plain error
            raise SparkUnavailableError(
                f"delta-spark's jars could not be fetched from Maven ({_first_line(exc)}); "
                "use RECSYS_LAKE_WRITER=deltalake"
            ) from exc
    else:
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
