"""The archiver against the real broker and a real Delta table: every accepted event
lands exactly once, through duplicates, poison messages and a kill -9 mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from batch.ingest import archived_purchases
from batch.lake import DeltaRsLake
from observability.archiver_metrics import ArchiverMetrics
from recsys.bus import KafkaBus, consumer_config, pending_events, producer_config
from recsys.engines.process import free_port, recsys_command
from recsys.erasure import customer_hash, erased_before
from recsys.events import Event
from recsys.settings import Settings
from stream.archiver import Archiver
from support import events_on_topic, new_topic, own_stream

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


NO_ERASURES = erased_before(Path("/nonexistent-lake"))


def _event(i: int, article: str = "0108775001") -> Event:
    return Event(event_id=f"e{i}", customer_id=f"c{i % 13}", article_id=article, price=0.01)


def _table_ids(path: Path) -> list[str]:
    try:
        table = DeltaTable(str(path))
    except TableNotFoundError:  # the archiver is creating it right now
        return []
    ids: list[str] = table.to_pandas(columns=["event_id"])["event_id"].tolist()
    return ids


def test_duplicates_and_poison_are_archived_once_or_not_at_all(
    settings: Settings, tmp_path: Path
) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    own = own_stream(settings, tmp_path / "data")
    topic = own.events_topic
    producer = Producer(producer_config(bootstrap, own))
    for i in range(40):
        event = _event(i)
        producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
    for i in range(0, 40, 4):  # a retried POST, delivered again
        event = _event(i)
        producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
    producer.produce(topic, key=b"x", value=b"not json at all")
    assert producer.flush(10) == 0

    consumer = Consumer(consumer_config(bootstrap, own.archiver_group, own))
    consumer.subscribe([topic])
    stop = threading.Event()
    metrics = ArchiverMetrics()
    archiver = Archiver(own, consumer, metrics=metrics)
    worker = threading.Thread(target=archiver.run, args=(stop,), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if pending_events(bootstrap, topic, own.archiver_group) == 0:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(10)
        consumer.close()
    ids = _table_ids(own.events_table)
    assert sorted(ids) == sorted(f"e{i}" for i in range(40))
    row = DeltaTable(str(own.events_table)).to_pandas().set_index("event_id").loc["e7"]
    assert (row["customer_id"], row["article_id"], row["event_type"]) == (
        "c7",
        "0108775001",
        "purchase",
    )
    sample = metrics.registry.get_sample_value
    assert sample("archiver_rows_written_total", {"table": own.events_table.name}) == 40
    assert sample("archiver_messages_invalid_total", {"topic": topic}) == 1
    assert (sample("archiver_flush_duration_seconds_count") or 0) >= 1
    assert (sample("archiver_last_flush_timestamp_seconds") or 0) > time.time() - 120
    assert sample("archiver_flush_failures_total") == 0


def _archiver_process(
    own: Settings, log: Path, flush_interval_s: float = 0.1, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(own.data_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": own.kafka_bootstrap_servers or "",
        "RECSYS_EVENTS_TOPIC": own.events_topic,
        "RECSYS_ARCHIVER_GROUP": own.archiver_group,
        "RECSYS_ARCHIVER_BATCH_SIZE": "50",
        "RECSYS_ARCHIVER_FLUSH_INTERVAL_S": str(flush_interval_s),
        "RECSYS_ARCHIVER_METRICS_PORT": str(metrics_port),
    }
    return subprocess.Popen(
        recsys_command("archiver"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_kill_mid_stream_loses_and_duplicates_nothing(settings: Settings, tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    topic = new_topic(settings)
    own = settings.model_copy(
        update={"data_dir": tmp_path / "data", "events_topic": topic,
                "archiver_group": f"arch-{topic}"}
    )  # fmt: skip
    total = 3_000
    producer = Producer(producer_config(bootstrap, own))
    killed = threading.Event()

    def produce() -> None:
        # A steady stream; the second half waits for the kill, so the kill lands mid-way
        # however fast or slow the machine is.
        for i in range(total):
            if i == total // 2:
                producer.flush(10)
                killed.wait(120)
            event = _event(i)
            producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
            if i % 100 == 0:
                producer.flush(10)
                time.sleep(0.05)
        producer.flush(10)

    log = tmp_path / "archiver.log"
    first = _archiver_process(own, log)
    feeder = threading.Thread(target=produce)
    feeder.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(_table_ids(own.events_table)) > 200:
                break
            time.sleep(0.1)
        assert len(_table_ids(own.events_table)) > 200, log.read_text()[-2000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed.set()
        written_at_kill = len(_table_ids(own.events_table))
        assert written_at_kill < total
        feeder.join(60)
        metrics_port = free_port()
        second = _archiver_process(own, log, metrics_port=metrics_port)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if len(_table_ids(own.events_table)) >= total and not pending_events(
                    bootstrap, topic, own.archiver_group
                ):
                    break
                time.sleep(0.3)
            # `recsys archiver` serves its metrics: what it wrote after the first's kill.
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            line = f'archiver_rows_written_total{{table="{own.events_table.name}"}} '
            written = [float(x.removeprefix(line)) for x in scraped.splitlines()
                       if x.startswith(line)]  # fmt: skip
            assert written == [total - written_at_kill], scraped[-2000:]
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        killed.set()
        if first.poll() is None:
            first.kill()
        feeder.join(60)
    ids = pd.Series(_table_ids(own.events_table))
    assert ids.is_unique, f"{int(ids.duplicated().sum())} events archived twice"
    assert set(ids) == {f"e{i}" for i in range(total)}, f"{total - len(ids)} events lost"


def test_archived_purchases_become_training_rows(
    settings: Settings, tmp_path: Path, spark: SparkSession
) -> None:
    from stream.events_table import EVENTS_SCHEMA, append_new, ensure_events_table

    path = tmp_path / "events"
    ensure_events_table(path)
    rows = [
        {**_event(1, "0108775001").model_dump(), "kafka_partition": 0, "kafka_offset": 1},
        {**_event(2, "0999999999").model_dump(), "kafka_partition": 0, "kafka_offset": 2},
    ]
    import pyarrow as pa

    assert append_new(path, pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)) == 2
    assert append_new(path, pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)) == 0
    store = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    articles = spark.createDataFrame(pd.DataFrame({"article_id": ["0108775001"]}))
    assert archived_purchases(store, tmp_path / "no-events", articles, NO_ERASURES) is None
    archived = archived_purchases(store, path, articles, NO_ERASURES)
    assert archived is not None
    frame, report = archived.frame.toPandas(), archived.report
    assert archived.last_ts == max(r["ts"] for r in rows)
    assert archived.table_version == 1
    assert report.rows_in == 2
    assert report.skipped["unknown article_id"] == 1
    assert frame["customer_id"].tolist() == ["c1"]
    assert frame["sales_channel_id"].tolist() == [2]
    assert frame["source"].tolist() == ["events"]
    assert frame["t_dat"].tolist() == [rows[0]["ts"].date()]


def test_the_batch_reads_archived_events_by_the_event_rule_and_erases_by_receipt(
    tmp_path: Path, spark: SparkSession
) -> None:
    """Rows archived before the event rule are skipped with their reason, as every
    consumer skips them; an erased customer's events count by when the stack received
    them: one stamped late but received before the erasure stays out."""
    import pyarrow as pa

    from stream.events_table import EVENTS_SCHEMA, ensure_events_table

    path = tmp_path / "events"
    ensure_events_table(path)
    erased_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    before, after = erased_at - timedelta(seconds=1), erased_at + timedelta(seconds=1)
    good = {
        "schema_version": 1,
        "event_type": "purchase",
        "article_id": "0108775001",
        "ts": datetime(2026, 2, 1, tzinfo=UTC),
        "price": 0.5,
        "received_at": before,
    }
    rows = [
        {**good, "event_id": "ok", "customer_id": "kept"},
        {**good, "event_id": "old", "customer_id": "kept", "ts": datetime(1990, 1, 1, tzinfo=UTC)},
        {**good, "event_id": "ahead", "customer_id": "kept", "ts": before + timedelta(days=2)},
        {**good, "event_id": "nan", "customer_id": "kept", "price": float("nan")},
        {**good, "event_id": "huge", "customer_id": "kept", "price": 1e308},
        {**good, "event_id": "newline", "customer_id": "kept\n"},
        {**good, "event_id": "refund", "customer_id": "kept", "event_type": "refund"},
        # Erased: stamped an hour after the erasure but received a second before it.
        {**good, "event_id": "raced", "customer_id": "gone", "ts": erased_at + timedelta(hours=1)},
        # Received after it (an old ts: a returning customer's late-stamped event) counts.
        {**good, "event_id": "back", "customer_id": "gone", "received_at": after},
    ]  # fmt: skip
    for n, row in enumerate(rows):
        row.update(kafka_partition=0, kafka_offset=n, received_date=row["received_at"].date())
    from deltalake import write_deltalake

    write_deltalake(str(path), pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA), mode="append")
    when = pd.Series([erased_at], dtype="datetime64[us, UTC]")
    erased = pd.DataFrame({"customer_hash": [customer_hash("gone")], "erased_at": when})
    store = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    articles = spark.createDataFrame(pd.DataFrame({"article_id": ["0108775001"]}))
    archived = archived_purchases(store, path, articles, erased)
    assert archived is not None
    kept = archived.frame.toPandas()
    assert sorted(zip(kept["customer_id"], kept["t_dat"].astype(str), strict=True)) == [
        ("gone", "2026-02-01"), ("kept", "2026-02-01")
    ]  # fmt: skip
    assert dict(archived.report.skipped) == {
        "event time out of range": 2,
        "price not finite or out of range": 2,
        "invalid customer_id": 1,
        "not an event type": 1,
    }


def test_archived_signals_train_by_their_weight_and_are_never_purchases(
    settings: Settings, tmp_path: Path, spark: SparkSession
) -> None:
    import pyarrow as pa

    from batch.interactions import interactions_job, with_signals
    from recsys.events import event_weights
    from stream.events_table import EVENTS_SCHEMA, append_new, ensure_events_table

    path = tmp_path / "events"
    ensure_events_table(path)
    events = [
        _event(1, "0108775001"),  # a purchase by c1
        *(
            Event.model_validate({**_event(i, article).model_dump(), "event_type": kind})
            for i, article, kind in (
                (2, "0108775001", "view"),
                (3, "0108775002", "click"),
                (4, "0108775002", "add_to_cart"),
                (5, "0999999999", "view"),  # an unknown article: skipped, counted
            )
        ),
    ]
    rows = [{**e.model_dump(), "kafka_partition": 0, "kafka_offset": i}
            for i, e in enumerate(events)]  # fmt: skip
    append_new(path, pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA))
    store = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    articles = spark.createDataFrame(pd.DataFrame({"article_id": ["0108775001", "0108775002"]}))
    archived = archived_purchases(store, path, articles, NO_ERASURES)
    assert archived is not None and archived.signals is not None
    assert archived.frame.toPandas()["customer_id"].tolist() == ["c1"]
    signals = archived.signals.toPandas().sort_values("customer_id")
    assert signals[["customer_id", "event_type"]].values.tolist() == [
        ["c2", "view"], ["c3", "click"], ["c4", "add_to_cart"]
    ]  # fmt: skip
    assert archived.report.rows_in == 5
    assert archived.report.skipped["unknown article_id"] == 1

    own = settings.model_copy(update={"event_weight_view": 0.0, "event_weight_click": 0.25})
    weighted = with_signals(archived.frame, archived.signals, event_weights(own))
    out = interactions_job(weighted, None).toPandas().set_index("customer_id")["weight"]
    # The purchase 1, the view ignored (weight 0), the click and the cart their weights.
    assert out.to_dict() == pytest.approx(
        {"c1": 1.0, "c3": 0.25, "c4": own.event_weight_add_to_cart}
    )


def test_a_broker_restart_does_not_stop_the_archiver(settings: Settings, tmp_path: Path) -> None:
    """The embedded broker forgets its topics and groups when it restarts: the archiver
    rejoins and archives what comes next, each event once. (A commit that meets the
    forgotten group answers UNKNOWN_MEMBER_ID and is skipped, stream.offsets; that race
    was seen by `recsys bench soak`, not forced here.)"""
    from recsys.bus import ensure_topics
    from recsys.engines.tansu import start_tansu

    port = free_port()
    broker, bootstrap = start_tansu(tmp_path, timeout=20, port=port)
    own = settings.model_copy(
        update={"data_dir": tmp_path / "data", "kafka_bootstrap_servers": bootstrap}
    )
    log = tmp_path / "archiver.log"
    archiver = None

    def produce(events: range) -> None:
        producer = Producer(producer_config(bootstrap, own))
        for i in events:
            event = _event(i)
            producer.produce(own.events_topic, key=event.customer_id.encode(),
                             value=event.to_bytes())  # fmt: skip
        assert producer.flush(10) == 0

    def archived(n: int) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and archiver is not None and archiver.poll() is None:
            if len(set(_table_ids(own.events_table))) >= n:
                return True
            time.sleep(0.2)
        return False

    try:
        ensure_topics(bootstrap, own)
        # Batches wait 3 s: the one read before the restart is committed after it.
        archiver = _archiver_process(own, log, flush_interval_s=3.0)
        produce(range(200))
        assert archived(200), log.read_text()[-2000:]
        produce(range(200, 230))  # under the batch size of 50: waits for the interval
        time.sleep(1.0)  # read, not yet written
        broker.stop()
        broker, _ = start_tansu(tmp_path, timeout=20, port=port)
        ensure_topics(bootstrap, own)
        for start in range(230, 400, 10):
            produce(range(start, start + 10))
            time.sleep(0.5)
        assert archived(400), log.read_text()[-3000:]
    finally:
        if archiver is not None:
            archiver.send_signal(signal.SIGTERM)
            archiver.wait(30)
        broker.stop()
    ids = pd.Series(_table_ids(own.events_table))
    assert ids.is_unique and set(ids) == {f"e{i}" for i in range(400)}


def test_a_row_the_table_cannot_hold_is_dead_lettered_and_the_rest_archived(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event the rule lets through but the table's schema cannot hold (here a price
    column of fixed decimals, as a table of some other version might have) goes to the
    dead-letter topic with the reason; the flush archives the others and commits, rather
    than failing on it forever."""
    import pyarrow as pa

    from stream import archiver as archiver_module
    from stream.dead_letters import read_dead_letters

    bootstrap = str(settings.kafka_bootstrap_servers)
    own = own_stream(settings, tmp_path / "data")
    events = [Event(customer_id="c1", article_id="a1"), Event(customer_id="c2", article_id="a1",
              price=0.5), Event(customer_id="c3", article_id="a1")]  # fmt: skip
    schema = archiver_module.EVENTS_SCHEMA
    whole = schema.set(schema.get_field_index("price"), pa.field("price", pa.decimal128(3, 0)))
    monkeypatch.setattr(archiver_module, "EVENTS_SCHEMA", whole)
    with events_on_topic(own, events) as (consumer, messages):
        archiver = Archiver(own, consumer, Producer(producer_config(bootstrap, own)))
        archiver.flush(messages)
    assert sorted(_table_ids(own.events_table)) == sorted([events[0].event_id, events[2].event_id])
    (letter,) = read_dead_letters(KafkaBus(bootstrap, own), own)
    assert letter.value == events[1].to_bytes()
    assert letter.reason.startswith("not archived: ArrowTypeError")
    assert pending_events(bootstrap, own.events_topic, own.archiver_group) == 0
