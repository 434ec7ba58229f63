"""A batch that stops says why in one line: step, limit, setting."""

from __future__ import annotations

import pytest

from batch.failure import NotEnoughMemoryError, check_driver_memory, explain
from recsys.settings import Settings


def _spark_error(message: str) -> Exception:
    # What py4j raises for a failed Spark job, without starting one.
    kind = type("Py4JJavaError", (Exception,), {"__module__": "py4j.protocol"})
    error: Exception = kind(message)
    return error


def test_a_result_limit_names_the_setting() -> None:
    line = explain(
        "evaluate on a holdout",
        _spark_error("Total size of serialized results ... bigger than spark.driver.maxResultSize"),
        Settings(),
    )
    assert line is not None
    assert line.startswith("step 'evaluate on a holdout'")
    assert "RECSYS_SPARK_CONF" in line and "\n" not in line


def test_a_java_heap_names_the_driver_memory() -> None:
    heap = _spark_error("java.lang.OutOfMemoryError: Java heap space")
    line = explain("build interactions", heap, Settings(spark_driver_memory="3g"))
    assert line is not None and "RECSYS_SPARK_DRIVER_MEMORY (now 3g)" in line


def test_pythons_memory_is_named_too() -> None:
    line = explain("train ALS (implicit)", MemoryError(), Settings())
    assert line is not None and "driver's Python" in line and "GiB free" in line


def test_any_other_spark_failure_is_its_first_line() -> None:
    line = explain(None, _spark_error("\nAnalysisException: boom\n  at ..."), Settings())
    assert line == "the batch failed in Spark: AnalysisException: boom; no version was made live"


def test_a_bug_keeps_its_traceback() -> None:
    assert explain("x", KeyError("k"), Settings()) is None


def test_a_fit_that_cannot_fit_is_refused_before_it_starts() -> None:
    with pytest.raises(NotEnoughMemoryError) as refused:
        check_driver_memory("implicit", 10**12, "train ALS (implicit)")
    line = str(refused.value)
    assert line.startswith("step 'train ALS (implicit)': 1,000,000,000,000 interactions need")
    assert "GiB are free" in line and "RECSYS_TRAINER=spark" in line and "\n" not in line
    check_driver_memory("implicit", 1_000, "train ALS (implicit)")  # fits
    check_driver_memory("spark", 10**12, "train ALS (spark)")  # Spark spills: not refused
