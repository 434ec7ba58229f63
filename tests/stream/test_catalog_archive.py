"""The archiver writes the catalog topic to the Delta `items` table (one row per article,
the newest message winning, nothing written twice), and the next batch run serves what
it holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer
from deltalake import DeltaTable

from batch.pipeline import BatchReport, run_batch
from recsys.articles import Article, Availability, CatalogMessage
from recsys.bus import KafkaBus, consumer_config, pending_events, producer_config
from recsys.hm_schema import ARTICLES_FILE
from recsys.index.base import ItemFilter
from recsys.index.factory import open_backend
from recsys.model_store import read_trending
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from stream.archiver import Archiver
from stream.dead_letters import Fix, read_dead_letters, resend
from support import isolated, new_topic

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _article(article_id: str, name: str, **fields: Any) -> Article:
    return Article(
        article_id=article_id,
        prod_name=name,
        product_type_name="Vest top",
        product_group_name="Garment Upper body",
        **fields,
    )


def _publish(settings: Settings, topic: str, payloads: Sequence[bytes | CatalogMessage]) -> None:
    assert settings.kafka_bootstrap_servers
    producer = Producer(producer_config(settings.kafka_bootstrap_servers, settings))
    for payload in payloads:
        if isinstance(payload, CatalogMessage):
            producer.produce(topic, key=payload.key.encode(), value=payload.to_bytes())
        else:
            producer.produce(topic, key=b"junk", value=payload)
    assert producer.flush(10) == 0


def _archive(own: Settings, group: str, dead_letters: bool = False) -> None:
    """Run the archiver on the catalog topic until its group has consumed everything."""
    assert own.kafka_bootstrap_servers
    consumer = Consumer(consumer_config(own.kafka_bootstrap_servers, group, own))
    consumer.subscribe([own.catalog_topic])
    stop = threading.Event()
    dlq = Producer(producer_config(own.kafka_bootstrap_servers, own)) if dead_letters else None
    archiver = Archiver(own, consumer, dlq)
    worker = threading.Thread(target=archiver.run, args=(stop,), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 40
        while pending_events(own.kafka_bootstrap_servers, own.catalog_topic, group):
            assert time.monotonic() < deadline, "the archiver did not catch up"
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(10)
        consumer.close()


def _table(path: Path) -> pd.DataFrame:
    return DeltaTable(str(path)).to_pandas().set_index("article_id").sort_index()


def test_each_article_is_archived_once_and_the_newest_message_wins(
    settings: Settings, tmp_path: Path
) -> None:
    topic = new_topic(settings, partitions=1)
    own = settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "catalog_topic": topic,
            "dlq_topic": f"{topic}.dlq",
            "archiver_flush_interval_s": 0.2,
        }
    )
    first = CatalogMessage(ts=T0, article=_article("a1", "first"))
    newer = CatalogMessage(ts=T0 + timedelta(hours=1), article=_article("a1", "second"))
    stale = CatalogMessage(ts=T0 - timedelta(hours=1), article=_article("a2", "stale"))
    a2 = CatalogMessage(ts=T0, article=_article("a2", "kept", section_no=12))
    others = [CatalogMessage(ts=T0, article=_article(f"b{i}", f"other {i}")) for i in range(5)]
    # a1 changes; a2's stale message arrives after its newer one; a retried send; poison.
    _publish(own, topic, [first, a2, *others, newer, stale, first, b"not a message"])
    _archive(own, f"arch-{topic}", dead_letters=True)

    table = _table(own.items_table)
    assert list(table.index) == ["a1", "a2", *(f"b{i}" for i in range(5))]
    assert table.loc["a1", "prod_name"] == "second"
    assert table.loc["a1", "message_id"] == newer.message_id
    assert (table.loc["a2", "prod_name"], table.loc["a2", "section_no"]) == ("kept", 12)

    # The poison is a dead letter of the catalog topic; fixed, it goes back there.
    (letter,) = read_dead_letters(KafkaBus(str(own.kafka_bootstrap_servers), own), own)
    assert (letter.value, letter.source_topic) == (b"not a message", topic)
    assert "Invalid JSON" in letter.reason
    fixed = CatalogMessage(ts=T0, article=_article("c1", "fixed"))
    report = resend(KafkaBus(str(own.kafka_bootstrap_servers), own), own, [letter],
                    [Fix(letter.ref, fixed.to_bytes())])  # fmt: skip
    assert report.sent == [letter.ref]
    _archive(own, f"arch-{topic}")
    table = _table(own.items_table)
    assert table.loc["c1", "prod_name"] == "fixed"
    table = table.drop(index="c1")

    # A second archiver reading the topic from the start (offsets lost) changes nothing.
    version = DeltaTable(str(own.items_table)).version()
    _archive(own, f"arch-again-{topic}")
    assert DeltaTable(str(own.items_table)).version() == version
    pd.testing.assert_frame_equal(_table(own.items_table).drop(index="c1"), table)

    # A newer change later is one more commit, replacing the row.
    _publish(own, topic, [CatalogMessage(article=_article("b0", "renamed"))])
    _archive(own, f"arch-{topic}")
    after = _table(own.items_table)
    assert len(after) == 8 and after.loc["b0", "prod_name"] == "renamed"


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, redis.Redis]]:
    with isolated(settings, tmp_path / "data", db=14) as (mine, client):
        yield mine.model_copy(update={"catalog_topic": new_topic(settings, 1)}), client


def test_the_next_batch_serves_the_archived_articles(
    own: tuple[Settings, redis.Redis],
    input_dir: Path,
    spark: SparkSession,
    transactions: pd.DataFrame,
) -> None:
    settings, client = own
    catalogue = pd.read_csv(input_dir / ARTICLES_FILE, dtype=str, keep_default_na=False)
    bought = str(transactions["article_id"].value_counts().index[0])
    row = catalogue.set_index("article_id").loc[bought].to_dict()
    known = Article.model_validate({**row, "article_id": bought, "prod_name": "Renamed"})
    fresh = [
        Article.model_validate({**row, "article_id": f"0999500{i:03d}", "prod_name": f"New {i}"})
        for i in range(3)
    ]
    sold_out = [
        CatalogMessage.set_availability(Availability(article_id=a, available=flag), ts)
        for a, flag, ts in [
            (bought, False, T0),
            (fresh[0].article_id, False, T0),
            (fresh[1].article_id, True, T0 + timedelta(hours=1)),  # the newest wins
            (fresh[1].article_id, False, T0),
        ]
    ]
    _publish(
        settings,
        settings.catalog_topic,
        [*(CatalogMessage(article=a) for a in [*fresh, known]), *sold_out],
    )
    _archive(settings, f"arch-{settings.catalog_topic}")
    rows = DeltaTable(str(settings.availability_table)).to_pyarrow_table().to_pylist()
    assert sorted((r["article_id"], r["available"]) for r in rows) == sorted(
        [(bought, False), (fresh[0].article_id, False), (fresh[1].article_id, True)]
    )

    with Steps(enabled=False) as steps:
        report: BatchReport = run_batch(settings, input_dir, RedisUserStore(client), steps, spark)
    archived = next(t for t in report.tables if t.name == "archived articles")
    assert (archived.rows_in, archived.rows_skipped) == (4, 0)
    assert "bronze.availability" in report.data_version
    index = open_backend(settings).open(report.version)
    try:
        payloads = index.retrieve([a.article_id for a in [*fresh, known]])
        unavailable = set(index.unavailable())
        trending = read_trending(settings.models_dir, report.version)
        popular = trending.top(50, ItemFilter(), index.unavailable())
    finally:
        index.close()
    # The archived availabilities are in the new version: a sold-out article stays out.
    assert unavailable == {bought, fresh[0].article_id}
    assert [payloads[a.article_id]["available"] for a in fresh] == [False, True, True]
    assert bought in [e["article_id"] for e in trending.overall]  # the most bought...
    assert bought not in [i.article_id for i in popular]  # ...is not served
    for article in fresh:
        assert payloads[article.article_id]["placed_by"] == "content"
        assert payloads[article.article_id]["prod_name"] == article.prod_name
    # The archived row wins over the CSV's; its purchases keep it collaborative.
    assert payloads[bought]["prod_name"] == "Renamed"
    assert payloads[bought]["placed_by"] == "collaborative"
