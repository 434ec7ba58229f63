"""`recsys catalog upsert --file`: every row of an articles CSV validated like POST /items,
bad rows reported by line and field, the good ones on the catalog topic."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from batch.hm_schema import ARTICLES_SCHEMA
from recsys.articles import CatalogMessage
from recsys.catalog_upload import CatalogFileError, read_catalog_file
from recsys.settings import Settings
from stream.bus import consumer_config
from support import engine_pids, new_topic


def _write(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or ARTICLES_SCHEMA.names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(article_id: str, **fields: str) -> dict[str, str]:
    return {
        "article_id": article_id,
        "product_code": "108775",
        "prod_name": "Strap top",
        "product_type_no": "253",
        "product_type_name": "Vest top",
        "product_group_name": "Garment Upper body",
        "colour_group_code": "",
        "detail_desc": "Jersey top with narrow shoulder straps.",
        **fields,
    }


ROWS = [
    _row("0999600001", detail_desc="Two lines:\nthe second one, with a comma"),
    _row("bad id"),  # line 4: the quoted description above spans lines 2-3
    _row("0999600002", product_type_no="many"),
    _row("0999600001"),  # a duplicate of line 2
    _row("0999600003", prod_name="x" * 201, product_group_name=""),
    _row("0999600004"),
]


def test_rows_are_validated_with_their_lines_and_fields(tmp_path: Path) -> None:
    found = read_catalog_file(_write(tmp_path / "articles.csv", ROWS))
    assert [a.article_id for a in found.articles] == ["0999600001", "0999600004"]
    assert found.articles[0].detail_desc == "Two lines:\nthe second one, with a comma"
    assert found.articles[0].colour_group_code is None  # an empty number is none
    assert [str(b) for b in found.bad] == [
        "line 4: article_id: String should match pattern '^[A-Za-z0-9._:-]+$'",
        "line 5: product_type_no: Input should be a valid integer, unable to parse string as an "
        "integer",
        "line 6: article_id: 0999600001 is on line 2",
        "line 7: prod_name: String should have at most 200 characters; product_group_name: "
        "String should have at least 1 character",
    ]
    assert found.rows == 6


def test_a_file_without_the_required_columns_is_one_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", [{"article_id": "1"}], header=["article_id"])
    with pytest.raises(CatalogFileError, match="missing column"):
        read_catalog_file(path)
    with pytest.raises(CatalogFileError, match="cannot read"):
        read_catalog_file(tmp_path / "nowhere.csv")


def _recsys(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env}
    for var in ("RECSYS_REDIS_URL", "RECSYS_QDRANT_URL"):
        full.pop(var, None)
    if "RECSYS_KAFKA_BOOTSTRAP_SERVERS" not in env:
        full.pop("RECSYS_KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "recsys", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_upsert_publishes_the_good_rows_and_reports_the_bad(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers
    topic = new_topic(settings, partitions=1)
    path = _write(tmp_path / "articles.csv", ROWS)
    result = _recsys(
        tmp_path, "catalog", "upsert", "--file", str(path),
        RECSYS_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RECSYS_CATALOG_TOPIC=topic,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad row line 4: article_id" in result.stdout
    assert "bad row line 7: prod_name" in result.stdout
    assert f"2 of 6 articles published to {topic}; 4 bad rows" in result.stdout
    assert "Traceback" not in result.stderr

    consumer = Consumer(
        consumer_config(settings.kafka_bootstrap_servers, f"read-{topic}", settings)
    )
    consumer.subscribe([topic])
    got: list[CatalogMessage] = []
    try:
        for _ in range(40):
            got += [
                CatalogMessage.from_bytes(m.value() or b"")
                for m in consumer.consume(10, 0.5)
                if m.error() is None
            ]
            if len(got) >= 2:
                break
    finally:
        consumer.close()
    assert [m.key for m in got] == ["0999600001", "0999600004"]
    assert got[0].article.detail_desc.startswith("Two lines:\nthe second")


def test_upsert_refuses_a_broker_that_would_vanish_with_it(tmp_path: Path) -> None:
    before = engine_pids()
    path = _write(tmp_path / "articles.csv", ROWS[:1])
    result = _recsys(tmp_path, "catalog", "upsert", "--file", str(path))
    assert result.returncode == 2
    assert "no broker is running" in result.stdout
    assert engine_pids() - before == set()
