"""Spark's options come through the settings, so a cluster is tuned without code."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_any_spark_property_is_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RECSYS_SPARK_CONF",
        '{"spark.driver.maxResultSize": "2g", "spark.sql.adaptive.enabled": "true"}',
    )
    settings = Settings()
    assert settings.spark_conf == {
        "spark.driver.maxResultSize": "2g",
        "spark.sql.adaptive.enabled": "true",
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [("{not json", "not JSON"), ('{"driver.memory": "8g"}', "is not a Spark property")],
)
def test_a_bad_spark_conf_is_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("RECSYS_SPARK_CONF", value)
    with pytest.raises(ValidationError, match=reason):
        Settings()


@pytest.mark.spark
def test_the_session_carries_the_settings_properties(spark: SparkSession) -> None:
    # The suite's session is built with spark_conf {"spark.recsys.suite": "on"} (conftest).
    assert spark.conf.get("spark.recsys.suite") == "on"
    assert spark.sparkContext.getConf().get("spark.driver.memory") == "2g"
