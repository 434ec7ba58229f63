"""Exactly-once with state bounded per customer (recsys/apply.py): a floor of broker
time and the latest few events above it, against redeliveries, a broker that restarts
its offsets at zero with another partition count, and a replay beside the updater."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer

from batch.pipeline import BatchReport
from recsys import keys
from recsys.apply import FLOOR_BYTES, RECORD_BYTES, EventApplier, Target, is_applied
from recsys.bus import consumer_config, ensure_topics, producer_config
from recsys.events import Event
from recsys.settings import Settings
from stream.updater import Updater
from support import wait_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _events(customer: str, articles: Sequence[str], n: int, tag: str) -> list[Event]:
    return [
        Event(
            event_id=f"{tag}-{i}",
            customer_id=customer,
            article_id=articles[i % len(articles)],
            ts=T0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def _purchases(client: redis.Redis, version: str, customer: str) -> int:
    return int(client.hget(keys.profile(version, customer), "purchases") or 0)


@pytest.fixture
def articles(transactions: pd.DataFrame) -> list[str]:
    return [str(a) for a in transactions["article_id"].drop_duplicates().head(8)]


def test_a_live_customer_holds_a_few_events_and_none_applies_twice(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, articles: list[str]
) -> None:
    version, kept = trained.version, settings.applied_events_kept
    customer = f"bound-{uuid.uuid4().hex[:8]}"
    events = _events(customer, articles, 3 * kept, customer)
    stamps = [_ms(T0) + 1000 * i for i in range(len(events))]
    applier, live = EventApplier(settings, redis_conn), Target(version, live=True)

    assert applier.apply(live, events, stamps) == (len(events), 0)
    state = redis_conn.get(keys.applied_events(version, customer))
    assert isinstance(state, bytes) and len(state) == FLOOR_BYTES + kept * RECORD_BYTES
    # Every event is applied: the oldest below the floor, the latest remembered.
    assert all(is_applied(state, s, e.event_id) for e, s in zip(events, stamps, strict=True))
    # Redelivered, all of them, in order or not: nothing moves again.
    assert applier.apply(live, events[::-1], stamps[::-1]) == (0, len(events))
    assert _purchases(redis_conn, version, customer) == len(events)
    # A new event after them is applied; the state keeps its size.
    later = _events(customer, articles, 1, f"{customer}-later")
    assert applier.apply(live, later, [stamps[-1] + 1]) == (1, 0)
    assert redis_conn.strlen(keys.applied_events(version, customer)) == len(state)


def test_events_sharing_a_millisecond_are_each_applied_once(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, articles: list[str]
) -> None:
    """A burst: many of a customer's events carry one broker millisecond. Dropping one of
    them must not raise the floor over the others still to come."""
    version, kept = trained.version, settings.applied_events_kept
    customer = f"burst-{uuid.uuid4().hex[:8]}"
    events = _events(customer, articles, 4 * kept, customer)
    stamps = [_ms(T0) + 1000 * (i // (kept + 4)) for i in range(len(events))]
    applier, live = EventApplier(settings, redis_conn), Target(version, live=True)
    for event, stamp in zip(events, stamps, strict=True):  # one by one, as they arrive
        assert applier.apply(live, [event], [stamp]) == (1, 0)
    assert applier.apply(live, events, stamps) == (0, len(events))
    assert _purchases(redis_conn, version, customer) == len(events)
    state = redis_conn.get(keys.applied_events(version, customer))
    assert isinstance(state, bytes) and len(state) <= FLOOR_BYTES + (2 * kept + 4) * RECORD_BYTES


def test_events_out_of_broker_order_within_the_kept_ones_each_apply_once(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, articles: list[str]
) -> None:
    """A customer moved to another partition while a backlog of theirs waited on the old
    one: the new partition's events come first, the older ones after, each applied once."""
    version, kept = trained.version, settings.applied_events_kept
    customer = f"moved-{uuid.uuid4().hex[:8]}"
    events = _events(customer, articles, kept, customer)
    stamps = [_ms(T0) + 1000 * i for i in range(kept)]
    half = kept // 2
    applier, live = EventApplier(settings, redis_conn), Target(version, live=True)
    assert applier.apply(live, events[half:], stamps[half:]) == (kept - half, 0)
    assert applier.apply(live, events[:half], stamps[:half]) == (half, 0)
    assert applier.apply(live, events, stamps) == (0, kept)
    assert _purchases(redis_conn, version, customer) == kept


def test_a_replay_beside_the_updater_misses_nothing_and_promotion_bounds_it(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, articles: list[str]
) -> None:
    """A candidate: the updater applies a customer's newest events while the replay
    still has older ones to go (more than the kept number of each). The candidate
    remembers them all, so the floor never hides an older one; once live, trimming
    bounds the string and every event still counts as applied."""
    version, kept = trained.version, settings.applied_events_kept
    customer = f"replay-{uuid.uuid4().hex[:8]}"
    events = _events(customer, articles, 4 * kept, customer)
    stamps = [_ms(T0) + 1000 * i for i in range(len(events))]
    redis_conn.delete(keys.applied_events(version, customer))
    applier, candidate = EventApplier(settings, redis_conn), Target(version, live=False)
    old, new = slice(0, 2 * kept), slice(2 * kept, None)
    assert applier.apply(candidate, events[new], stamps[new]) == (2 * kept, 0)  # updater
    assert applier.apply(candidate, events[old], stamps[old]) == (2 * kept, 0)  # replay
    assert applier.apply(candidate, events, stamps) == (0, len(events))
    full = redis_conn.strlen(keys.applied_events(version, customer))
    assert full == FLOOR_BYTES + len(events) * RECORD_BYTES

    assert applier.trim_applied(version) >= len(events) - kept
    state = redis_conn.get(keys.applied_events(version, customer))
    assert isinstance(state, bytes) and len(state) == FLOOR_BYTES + kept * RECORD_BYTES
    assert applier.apply(Target(version, live=True), events, stamps) == (0, len(events))
    assert _purchases(redis_conn, version, customer) == len(events)


@pytest.fixture
def own_broker(settings: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    from recsys.engines.process import free_port

    port = free_port()
    own = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{port}",
            "updater_group": f"upd-{uuid.uuid4().hex[:8]}",
            "events_partitions": 1,
        }
    )
    return own, tmp_path


def test_a_broker_restarted_at_offset_zero_with_more_partitions_applies_each_event_once(
    own_broker: tuple[Settings, Path],
    redis_conn: redis.Redis,
    trained: BatchReport,
    articles: list[str],
) -> None:
    """The embedded broker forgets everything when it restarts: offsets start at zero
    again, here with three partitions instead of one, so customers move. New events are
    applied, clients' retries of events applied before the restart are not."""
    from recsys.engines.tansu import start_tansu

    own, log_dir = own_broker
    port = int(str(own.kafka_bootstrap_servers).rsplit(":", 1)[1])
    run = uuid.uuid4().hex[:8]
    customers = [f"restart-{run}-{i}" for i in range(12)]
    before = [
        Event(event_id=f"{run}-b{i}", customer_id=customers[i % 12], article_id=articles[i % 8])
        for i in range(120)
    ]
    after = [
        Event(event_id=f"{run}-a{i}", customer_id=customers[i % 12], article_id=articles[i % 8])
        for i in range(120)
    ]

    def produce(settings: Settings, events: Sequence[Event]) -> None:
        producer = Producer(producer_config(str(settings.kafka_bootstrap_servers), settings))
        for event in events:
            producer.produce(settings.events_topic, key=event.customer_id.encode(),
                             value=event.to_bytes())  # fmt: skip
        assert producer.flush(10) == 0

    def applied() -> int:
        return sum(_purchases(redis_conn, trained.version, c) for c in customers)

    broker, bootstrap = start_tansu(log_dir, timeout=20, port=port)
    stop = threading.Event()
    thread: threading.Thread | None = None
    consumer: Consumer | None = None
    try:
        ensure_topics(bootstrap, own)
        consumer = Consumer(consumer_config(bootstrap, own.updater_group, own))
        consumer.subscribe([own.events_topic])
        worker = Updater(own, redis_conn, consumer, Producer(producer_config(bootstrap, own)))
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        produce(own, before)
        wait_for(lambda: applied() >= len(before), timeout=60)

        broker.stop()
        broker, _ = start_tansu(log_dir, timeout=20, port=port)
        more = own.model_copy(update={"events_partitions": 3})
        ensure_topics(bootstrap, more)
        # Clients retry the last events they sent, then go on.
        produce(more, before[-24:] + after)
        wait_for(lambda: applied() >= len(before) + len(after), timeout=90)
        time.sleep(1.0)  # anything applied twice would show now
        assert applied() == len(before) + len(after)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=15)
        if consumer is not None:
            consumer.close()
        broker.stop()
