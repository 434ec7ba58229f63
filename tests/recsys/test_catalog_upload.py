"""`recsys catalog upsert --file` and `recsys catalog availability --file`: every row
validated like POST /items (or /items/availability), bad rows reported by line and
field, the good ones on the catalog topic."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from recsys.articles import Article, Availability, CatalogMessage
from recsys.bus import consumer_config
from recsys.catalog_upload import CatalogFileError, read_catalog_file
from recsys.engines.process import recsys_command
from recsys.hm_schema import ARTICLES_SCHEMA
from recsys.settings import Settings
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
    found = read_catalog_file(_write(tmp_path / "articles.csv", ROWS), Article)
    assert [a.article_id for a in found.records] == ["0999600001", "0999600004"]
    assert found.records[0].detail_desc == "Two lines:\nthe second one, with a comma"
    assert found.records[0].colour_group_code is None  # an empty number is none
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
        read_catalog_file(path, Article)
    with pytest.raises(CatalogFileError, match=r"missing column.*available"):
        read_catalog_file(path, Availability)
    with pytest.raises(CatalogFileError, match="cannot read"):
        read_catalog_file(tmp_path / "nowhere.csv", Article)


AVAILABILITY = [
    {"article_id": "0999600001", "available": "false"},
    {"article_id": "0999600002", "available": "TRUE"},
    {"article_id": "0999600003", "available": "0"},
    {"article_id": "0999600004", "available": "maybe"},
    {"article_id": "0999600001", "available": "yes"},
    {"article_id": "0999600005", "available": ""},
]


def test_availability_rows_take_the_words_a_spreadsheet_writes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", AVAILABILITY, header=["article_id", "available"])
    found = read_catalog_file(path, Availability)
    assert [(a.article_id, a.available) for a in found.records] == [
        ("0999600001", False),
        ("0999600002", True),
        ("0999600003", False),
    ]
    assert [str(b) for b in found.bad] == [
        "line 5: available: Input should be a valid boolean",
        "line 6: article_id: 0999600001 is on line 2",
        "line 7: available: Input should be a valid boolean",
    ]


def _recsys(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RECSYS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env}
    for var in ("RECSYS_REDIS_URL", "RECSYS_QDRANT_URL"):
        full.pop(var, None)
    if "RECSYS_KAFKA_BOOTSTRAP_SERVERS" not in env:
        full.pop("RECSYS_KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        recsys_command(*args),
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _read(settings: Settings, topic: str, n: int) -> list[tuple[bytes, CatalogMessage]]:
    """The first n catalog messages of the topic with their keys (fewer after 20 s)."""
    assert settings.kafka_bootstrap_servers
    consumer = Consumer(
        consumer_config(settings.kafka_bootstrap_servers, f"read-{topic}", settings)
    )
    consumer.subscribe([topic])
    got: list[tuple[bytes, CatalogMessage]] = []
    try:
        for _ in range(40):
            got += [
                (m.key() or b"", CatalogMessage.from_bytes(m.value() or b""))
                for m in consumer.consume(10, 0.5)
                if m.error() is None
            ]
            if len(got) >= n:
                break
    finally:
        consumer.close()
    return got


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

    keyed = _read(settings, topic, 2)
    got = [m for _, m in keyed]
    assert [m.key for m in got] == ["0999600001", "0999600004"]
    assert [k for k, _ in keyed] == [b"0999600001", b"0999600004"]
    assert got[0].article is not None
    assert got[0].article.detail_desc.startswith("Two lines:\nthe second")


def test_availability_file_publishes_availability_messages(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers
    topic = new_topic(settings, partitions=1)
    path = _write(tmp_path / "a.csv", AVAILABILITY, header=["article_id", "available"])
    result = _recsys(
        tmp_path, "catalog", "availability", "--file", str(path),
        RECSYS_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RECSYS_CATALOG_TOPIC=topic,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"3 of 6 availabilities published to {topic}; 3 bad rows" in result.stdout
    keyed = _read(settings, topic, 3)
    # Keys of their own on the compacted topic: an availability never erases its article.
    assert [k for k, _ in keyed] == [f"099960000{n}/availability".encode() for n in (1, 2, 3)]
    got = [m for _, m in keyed]
    assert [(m.op, m.key) for m in got] == [
        ("availability", "0999600001"),
        ("availability", "0999600002"),
        ("availability", "0999600003"),
    ]
    assert [m.availability.available for m in got if m.availability] == [False, True, False]


def test_upsert_refuses_a_broker_that_would_vanish_with_it(tmp_path: Path) -> None:
    before = engine_pids()
    path = _write(tmp_path / "articles.csv", ROWS[:1])
    result = _recsys(tmp_path, "catalog", "upsert", "--file", str(path))
    assert result.returncode == 2
    assert "no broker is running" in result.stdout
    assert engine_pids() - before == set()
