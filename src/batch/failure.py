"""Why a batch run stopped, in one line a user can act on: the step, the limit it hit,
and the setting that moves the limit."""

from __future__ import annotations

import psutil

from recsys.settings import Settings

GIB = 2**30
# The driver's peak resident memory per interaction with the implicit trainer, as the
# batch measured it at the H&M data set's shape (4.5 GiB at 27.4M interactions,
# docs/scale.md), rounded up: the matrix, its transpose, their construction, the ids.
IMPLICIT_BYTES_PER_INTERACTION = 180


class NotEnoughMemoryError(RuntimeError):
    """The input's size says the next step cannot fit in this machine's free memory."""


def check_driver_memory(trainer: str, interactions: int, step: str) -> None:
    """Before a single-node fit: refuse, in one line, what cannot fit (instead of a crash
    minutes later, or the machine swapping)."""
    if trainer != "implicit":
        return  # Spark's trainers spill, or fail with their own limit (explain, below)
    need = interactions * IMPLICIT_BYTES_PER_INTERACTION
    free = psutil.virtual_memory().available
    if need > free:
        raise NotEnoughMemoryError(
            f"step {step!r}: {interactions:,} interactions need about {need / GIB:.1f} GiB "
            f"in the driver's Python and {free / GIB:.1f} GiB are free; free memory, or train "
            "with Spark on a cluster (RECSYS_TRAINER=spark); no version was made live"
        )


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
