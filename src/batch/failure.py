"""Why a batch run stopped, in one line a user can act on: the step, the limit it hit,
and the setting that moves the limit."""

from __future__ import annotations

import psutil

from recsys.settings import Settings

GIB = 2**30


def _is_spark(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("py4j", "pyspark"))


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__


def explain(step: str | None, exc: BaseException, settings: Settings) -> str | None:
    """One line for a run that hit a memory or result limit, or failed inside Spark;
    None for any other error (a bug: its traceback is the useful report)."""
    where = f"step {step!r}" if step else "the batch"
    text = str(exc)
    if isinstance(exc, MemoryError):
        free = psutil.virtual_memory().available / GIB
        return (
            f"{where} ran out of memory in the driver's Python ({free:.1f} GiB free now); "
            "free memory, or train on a cluster (RECSYS_TRAINER=spark, RECSYS_SPARK_MASTER); "
            "no version was made live"
        )
    if not _is_spark(exc):
        return None
    if "maxResultSize" in text:
        return (
            f"{where}: a Spark result passed spark.driver.maxResultSize; raise it with "
            'RECSYS_SPARK_CONF=\'{"spark.driver.maxResultSize": "4g"}\' (and the driver '
            "memory with it); no version was made live"
        )
    if any(s in text for s in ("OutOfMemoryError", "Java heap space", "GC overhead limit")):
        return (
            f"{where}: Spark ran out of memory; raise RECSYS_SPARK_DRIVER_MEMORY (now "
            f"{settings.spark_driver_memory}), or RECSYS_SPARK_EXECUTOR_MEMORY on a cluster; "
            "no version was made live"
        )
    return f"{where} failed in Spark: {_first_line(exc)}; no version was made live"
