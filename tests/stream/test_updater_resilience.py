"""The updater against the real broker and Redis: one trace from the API request to the
Redis write, metrics for every outcome, and a kill -9 mid-stream that loses and
duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from batch.pipeline import BatchReport
from observability.updater_metrics import UpdaterMetrics
from recsys import keys
from recsys.apply import EventApplier
from recsys.bus import consumer_config, pending_events, producer_config
from recsys.ema import ema_update
from recsys.engines.process import recsys_command
from recsys.events import Event
from recsys.settings import Settings
from recsys.vectors import Vector, decode
from serve.app import create_app
from stream.updater import Updater
from support import TcpProxy, apply_live, assert_ema_chain, new_topic


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def traced(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport
) -> Iterator[tuple[TestClient, Updater, InMemorySpanExporter, Settings]]:
    """The API and an updater (in a thread) on their own topic, both exporting spans to
    one in-memory exporter."""
    assert settings.kafka_bootstrap_servers
    topic = new_topic(settings)
    own = settings.model_copy(update={"events_topic": topic, "updater_group": f"upd-{topic}"})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    consumer = Consumer(consumer_config(settings.kafka_bootstrap_servers, own.updater_group, own))
    consumer.subscribe([topic])
    producer = Producer(producer_config(settings.kafka_bootstrap_servers, own))
    worker = Updater(
        own, redis_conn, consumer, producer,
        metrics=UpdaterMetrics(), tracer=provider.get_tracer("test"),
    )  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with TestClient(create_app(own, span_exporter=exporter)) as api:
            yield api, worker, exporter, own
    finally:
        stop.set()
        thread.join(timeout=10)
        consumer.close()


def _sample(worker: Updater, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels or None)
    return float(value or 0.0)


def test_one_trace_spans_the_request_the_message_and_the_redis_write(
    traced: tuple[TestClient, Updater, InMemorySpanExporter, Settings],
    known_customer: str,
    transactions: pd.DataFrame,
    redis_conn: redis.Redis,
) -> None:
    api, worker, exporter, _ = traced
    article = str(transactions["article_id"].iloc[0])
    event_id = f"evt-{uuid.uuid4().hex}"
    body = {"customer_id": known_customer, "article_id": article, "event_id": event_id}
    assert api.post("/events/purchase", json=body).status_code == 202

    def applied_span() -> bool:
        return any(
            s.name == "updater.apply" and (s.attributes or {}).get("recsys.event_id") == event_id
            for s in exporter.get_finished_spans()
        )

    _wait_for(applied_span)
    spans = exporter.get_finished_spans()
    consumer_span = next(
        s for s in spans
        if s.name == "updater.apply" and (s.attributes or {}).get("recsys.event_id") == event_id
    )  # fmt: skip
    produce = next(s for s in spans if s.name == "kafka.produce")
    request = next(s for s in spans if s.name == "POST /events/purchase")
    assert consumer_span.context is not None and produce.context is not None
    assert request.context is not None
    # One trace: request -> kafka.produce -> updater.apply -> redis.apply_events.
    assert consumer_span.context.trace_id == request.context.trace_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == produce.context.span_id
    write = next(
        s for s in spans
        if s.name == "redis.apply_events" and s.parent is not None
        and s.parent.span_id == consumer_span.context.span_id
    )  # fmt: skip
    assert write.context is not None and write.context.trace_id == request.context.trace_id
    assert (consumer_span.attributes or {}).get("recsys.applied") is True

    # The same event again is a duplicate: counted, never applied twice.
    live = worker.applier.active_versions()[0].version
    before = decode(redis_conn.get(keys.user_vector(live, known_customer)))
    assert api.post("/events/purchase", json=body).status_code == 202
    _wait_for(lambda: _sample(worker, "events_processed_total", outcome="duplicate") >= 1)
    after = decode(redis_conn.get(keys.user_vector(live, known_customer)))
    np.testing.assert_array_equal(before, after)
    assert _sample(worker, "events_processed_total", outcome="applied") >= 1
    assert _sample(worker, "events_duplicates_skipped_total") >= 1
    assert _sample(worker, "event_processing_duration_seconds_count") >= 2


def test_poison_and_lag_are_measured(
    traced: tuple[TestClient, Updater, InMemorySpanExporter, Settings],
) -> None:
    _, worker, _, own = traced
    assert own.kafka_bootstrap_servers
    producer = Producer(producer_config(own.kafka_bootstrap_servers, own))
    producer.produce(own.events_topic, key=b"x", value=b"not json at all")
    assert producer.flush(10) == 0
    _wait_for(lambda: _sample(worker, "events_dead_lettered_total") >= 1)
    assert _sample(worker, "events_processed_total", outcome="dead_lettered") >= 1
    # Once consumed, every assigned partition reports a lag, and it is 0.
    _wait_for(
        lambda: (
            pending_events(own.kafka_bootstrap_servers or "", own.events_topic, own.updater_group)
            == 0
        )
    )
    time.sleep(1.5)  # the gauge refreshes each second
    lags = [
        s.value
        for metric in worker.metrics.registry.collect()
        if metric.name == "updater_consumer_lag"
        for s in metric.samples
    ]
    assert lags and all(v == 0 for v in lags)


def test_events_are_counted_and_traced_by_type(
    traced: tuple[TestClient, Updater, InMemorySpanExporter, Settings],
    known_customer: str,
    transactions: pd.DataFrame,
) -> None:
    api, worker, exporter, _ = traced
    article = str(transactions["article_id"].iloc[1])
    event_id = f"evt-{uuid.uuid4().hex}"
    body = {"customer_id": known_customer, "article_id": article, "event_id": event_id}
    assert api.post("/events/add_to_cart", json=body).status_code == 202
    by_type = "events_processed_by_type_total"
    _wait_for(lambda: _sample(worker, by_type, event_type="add_to_cart", outcome="applied") >= 1)
    assert _sample(worker, "events_processed_total", outcome="applied") >= 1
    assert api.post("/events/add_to_cart", json=body).status_code == 202
    _wait_for(lambda: _sample(worker, by_type, event_type="add_to_cart", outcome="duplicate") >= 1)
    span = next(
        s for s in exporter.get_finished_spans()
        if s.name == "updater.apply" and (s.attributes or {}).get("recsys.event_id") == event_id
    )  # fmt: skip
    assert (span.attributes or {}).get("recsys.event_type") == "add_to_cart"
    # The route template names the request span (no ids in it), and the API counts it.
    assert any(s.name == "POST /events/{event_type}" for s in exporter.get_finished_spans())
    assert api.get("/metrics").text.count('signal_events_accepted_total{event_type="add_to_cart"}')


def _updater_process(own: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(own.data_dir),
        "RECSYS_REDIS_URL": own.redis_url or "",
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": own.kafka_bootstrap_servers or "",
        "RECSYS_EVENTS_TOPIC": own.events_topic,
        "RECSYS_UPDATER_GROUP": own.updater_group,
        "RECSYS_UPDATER_METRICS_PORT": "0",
        "RECSYS_UPDATER_BATCH_SIZE": "50",
    }
    with log.open("ab") as out:
        return subprocess.Popen(recsys_command("updater"), env=env, stdout=out, stderr=out)


def test_kill_mid_stream_applies_every_event_exactly_once(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, tmp_path: Path,
    transactions: pd.DataFrame,
) -> None:  # fmt: skip
    """New customers, so every count starts at 0: after a SIGKILL mid-stream and a
    restart, each customer's purchase count equals its events and its vector equals the
    EMA chain of its events in order, once each."""
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    topic = new_topic(settings)
    own = settings.model_copy(update={"events_topic": topic, "updater_group": f"upd-{topic}"})
    version = trained.version
    articles = [str(a) for a in transactions["article_id"].drop_duplicates().head(40)]
    run = uuid.uuid4().hex[:8]
    customers = [f"kill-{run}-{i}" for i in range(25)]
    total = 2_000
    events = [
        Event(event_id=f"k{run}-{i}", customer_id=customers[i % len(customers)],
              article_id=articles[(i * 7) % len(articles)])
        for i in range(total)
    ]  # fmt: skip
    producer = Producer(producer_config(bootstrap, own))
    killed = threading.Event()

    def produce() -> None:
        for i, event in enumerate(events):
            if i == total // 2:
                producer.flush(10)
                killed.wait(120)
            producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
            if i % 50 == 0:
                producer.flush(10)
                time.sleep(0.02)
        producer.flush(10)

    def applied() -> int:
        pipe = redis_conn.pipeline(transaction=False)
        for customer in customers:
            pipe.hget(keys.profile(version, customer), "purchases")
        return sum(int(v or 0) for v in pipe.execute())

    log = tmp_path / "updater.log"
    first = _updater_process(own, log)
    feeder = threading.Thread(target=produce)
    feeder.start()
    try:
        _wait_for(lambda: applied() > 150, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed.set()
        assert applied() < total
        feeder.join(60)
        second = _updater_process(own, log)
        try:
            _wait_for(
                lambda: applied() >= total and not pending_events(bootstrap, topic,
                                                                  own.updater_group),
                timeout=90,
            )  # fmt: skip
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        killed.set()
        if first.poll() is None:
            first.kill()
        feeder.join(60)
    assert applied() == total, log.read_text()[-2000:]

    norm_raw = redis_conn.hget(keys.model_meta(version), "user_norm_median")
    default_norm = float(norm_raw) if norm_raw else 1.0
    items = {a: decode(redis_conn.get(keys.item_vector(version, a))) for a in articles}
    for customer in customers[:5]:
        mine = [e for e in events if e.customer_id == customer]
        assert int(redis_conn.hget(keys.profile(version, customer), "purchases") or 0) == len(mine)
        assert_ema_chain(redis_conn, version, customer, mine, items, own.ema_rate, default_norm)
        assert redis_conn.get(keys.last_event(customer)) == mine[-1].event_id.encode()


def test_a_concurrent_writer_never_loses_an_update(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, transactions: pd.DataFrame
) -> None:
    """Another writer (a promotion replay, say) applies an event to the same customer
    between this applier's read and its write: the write sees the conflict, re-reads and
    applies on top, so the vector reflects both events, in the order they landed."""
    version = trained.version
    customer = f"race-{uuid.uuid4().hex[:8]}"
    first_article, second_article = (str(a) for a in transactions["article_id"].unique()[:2])
    theirs = Event(event_id=f"theirs-{customer}", customer_id=customer, article_id=first_article)
    mine = Event(event_id=f"mine-{customer}", customer_id=customer, article_id=second_article)
    other = EventApplier(settings, redis_conn)

    class Raced(EventApplier):
        raced = False

        def _item_vectors(self, version: str, article_ids: Sequence[str]) -> dict[str, Vector]:
            # Called after this applier read the customer's vector, before it writes.
            if not self.raced:
                self.raced = True
                assert apply_live(other, version, [theirs]) == (1, 0)
            return super()._item_vectors(version, article_ids)

    assert apply_live(Raced(settings, redis_conn), version, [mine]) == (1, 0)
    assert int(redis_conn.hget(keys.profile(version, customer), "purchases") or 0) == 2
    norm_raw = redis_conn.hget(keys.model_meta(version), "user_norm_median")
    norm = float(norm_raw) if norm_raw else 1.0
    item_1 = decode(redis_conn.get(keys.item_vector(version, first_article)))
    item_2 = decode(redis_conn.get(keys.item_vector(version, second_article)))
    assert item_1 is not None and item_2 is not None
    expected = ema_update(ema_update(None, item_1, settings.ema_rate, norm), item_2,
                          settings.ema_rate, norm)  # fmt: skip
    stored = decode(redis_conn.get(keys.user_vector(version, customer)))
    assert stored is not None
    np.testing.assert_allclose(stored, expected, rtol=1e-5)
    assert redis_conn.get(keys.last_event(customer)) == mine.event_id.encode()


def test_a_redis_outage_pauses_the_updater_and_loses_nothing(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, transactions: pd.DataFrame
) -> None:
    assert settings.kafka_bootstrap_servers and settings.redis_url
    target = urlparse(settings.redis_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 6379))
    topic = new_topic(settings)
    own = settings.model_copy(update={"events_topic": topic, "updater_group": f"upd-{topic}"})
    through_proxy = redis.Redis.from_url(
        proxy.url_for(settings.redis_url), socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )  # fmt: skip
    consumer = Consumer(consumer_config(settings.kafka_bootstrap_servers, own.updater_group, own))
    consumer.subscribe([topic])
    producer = Producer(producer_config(settings.kafka_bootstrap_servers, own))
    worker = Updater(own, through_proxy, consumer, producer)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    customer = f"outage-{uuid.uuid4().hex[:8]}"
    article = str(transactions["article_id"].iloc[3])
    event = Event(event_id=f"out-{customer}", customer_id=customer, article_id=article)
    profile = keys.profile(trained.version, customer)
    try:
        proxy.set_mode("refuse")
        thread.start()
        producer.produce(topic, key=customer.encode(), value=event.to_bytes())
        assert producer.flush(10) == 0
        _wait_for(lambda: _sample(worker, "updater_redis_retries_total") >= 2, timeout=30)
        assert redis_conn.hget(profile, "purchases") is None  # nothing written meanwhile
        proxy.set_mode("forward")
        _wait_for(lambda: redis_conn.hget(profile, "purchases") == b"1", timeout=30)
        assert redis_conn.get(keys.last_event(customer)) == event.event_id.encode()
    finally:
        stop.set()
        thread.join(timeout=15)
        consumer.close()
        through_proxy.close()
        proxy.close()


def _owned(worker: Updater) -> int:
    return sum(
        1
        for metric in worker.metrics.registry.collect()
        if metric.name == "updater_consumer_lag"
        for _ in metric.samples
    )


def test_two_updaters_in_one_group_share_the_partitions_and_apply_each_event_once(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, transactions: pd.DataFrame
) -> None:
    assert settings.kafka_bootstrap_servers
    topic = new_topic(settings)  # two partitions
    own = settings.model_copy(update={"events_topic": topic, "updater_group": f"upd-{topic}"})
    stop = threading.Event()
    workers: list[tuple[Updater, Consumer, threading.Thread]] = []
    for _ in range(2):
        consumer = Consumer(
            consumer_config(settings.kafka_bootstrap_servers, own.updater_group, own)
        )
        consumer.subscribe([topic])
        producer = Producer(producer_config(settings.kafka_bootstrap_servers, own))
        worker = Updater(own, redis_conn, consumer, producer)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        workers.append((worker, consumer, thread))
    run = uuid.uuid4().hex[:8]
    customers = [f"pair-{run}-{i}" for i in range(40)]
    articles = [str(a) for a in transactions["article_id"].drop_duplicates().head(10)]
    total = 400
    try:
        # Each worker reports a lag per partition it owns (a consumer is not called from
        # another thread: its calls would wait on the consuming one).
        _wait_for(lambda: all(_owned(w) for w, _, _ in workers) and
                  sum(_owned(w) for w, _, _ in workers) == 2, timeout=60)  # fmt: skip
        producer = Producer(producer_config(settings.kafka_bootstrap_servers, own))
        for i in range(total):
            event = Event(event_id=f"pair-{run}-{i}", customer_id=customers[i % 40],
                          article_id=articles[i % len(articles)])  # fmt: skip
            producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
        assert producer.flush(10) == 0

        def applied() -> int:
            pipe = redis_conn.pipeline(transaction=False)
            for customer in customers:
                pipe.hget(keys.profile(trained.version, customer), "purchases")
            return sum(int(v or 0) for v in pipe.execute())

        _wait_for(lambda: applied() >= total, timeout=60)
        time.sleep(0.5)
        assert applied() == total
        shares = [_sample(w, "events_processed_total", outcome="applied") for w, _, _ in workers]
        assert all(share > 0 for share in shares), shares  # both did part of the work
        assert sum(shares) == total
    finally:
        stop.set()
        for _, consumer, thread in workers:
            thread.join(timeout=15)
            consumer.close()


def test_dead_letters_the_broker_does_not_take_hold_the_batch(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    """The first dead-letter producer reaches no broker (one stuck on a broker that
    restarted looks the same: nothing is acknowledged): the batch is not committed, the
    producer is replaced, and the poison message reaches the dead-letter topic."""
    from recsys.engines.process import free_port

    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    topic, dlq = new_topic(settings), new_topic(settings, partitions=1)
    own = settings.model_copy(
        update={"events_topic": topic, "updater_group": f"upd-{topic}", "dlq_topic": dlq,
                "kafka_produce_timeout_s": 1.0}
    )  # fmt: skip
    nowhere = Producer(producer_config(f"127.0.0.1:{free_port()}", own))
    replaced: list[Producer] = []

    def new_dlq() -> Producer:
        replaced.append(Producer(producer_config(bootstrap, own)))
        return replaced[-1]

    consumer = Consumer(consumer_config(bootstrap, own.updater_group, own))
    consumer.subscribe([topic])
    worker = Updater(own, redis_conn, consumer, nowhere, new_dlq_producer=new_dlq)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    marker = uuid.uuid4().hex.encode()
    try:
        producer = Producer(producer_config(bootstrap, own))
        producer.produce(topic, key=b"poison", value=b'{"broken": "' + marker + b'"}')
        assert producer.flush(10) == 0
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{dlq}",
                           "auto.offset.reset": "earliest"})  # fmt: skip
        reader.subscribe([dlq])
        found: list[bytes] = []
        try:
            deadline = time.monotonic() + 40
            while not found and time.monotonic() < deadline:
                found += [m.value() or b"" for m in reader.consume(10, 0.5) if m.error() is None]
        finally:
            reader.close()
        assert found and marker in found[0], "the poison message never reached the DLQ"
        assert len(replaced) == 1
        _wait_for(lambda: pending_events(bootstrap, topic, own.updater_group) == 0)
    finally:
        stop.set()
        thread.join(timeout=10)
        consumer.close()
