"""The simulator against the real stack: the app served by uvicorn on a loopback port, the
suite's broker and Redis, and the real updater in a thread. Nothing is mocked."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer
from rich.console import Console

from batch.pipeline import BatchReport
from recsys.bus import consumer_config, producer_config, wait_drained
from recsys.engines.process import free_port
from recsys.settings import Settings
from serve.app import create_app
from simulator.config import SimulationConfig
from simulator.population import load_population
from simulator.report import STATUS_CLASSES, SimulationReport, report_table
from simulator.run import ApiUnavailableError, simulate
from stream.updater import Updater
from support import serving


class UpdaterThread:
    """The updater consuming in a thread, as `recsys updater` does in its process (the
    pattern of tests/stream/test_updater.py), which a test can stop and start again: a
    new consumer of the same group goes on from the committed offsets."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        assert settings.kafka_bootstrap_servers
        self.bootstrap = settings.kafka_bootstrap_servers
        self.group = f"simulator-test-{uuid.uuid4().hex[:8]}"
        self.settings = settings.model_copy(update={"updater_group": self.group})
        self.client = client
        self.running: tuple[threading.Thread, threading.Event, Consumer] | None = None

    def start(self) -> None:
        if self.running is not None:
            return
        consumer = Consumer(consumer_config(self.bootstrap, self.group, self.settings))
        consumer.subscribe([self.settings.events_topic])
        producer = Producer(producer_config(self.bootstrap, self.settings))
        stop = threading.Event()
        worker = Updater(self.settings, self.client, consumer, producer)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        self.running = (thread, stop, consumer)

    def stop(self) -> None:
        if self.running is None:
            return
        thread, stop, consumer = self.running
        stop.set()
        thread.join(timeout=10)
        consumer.close()
        self.running = None

    def catch_up(self, timeout_s: float = 30.0) -> None:
        left = wait_drained(self.bootstrap, self.settings.events_topic, [self.group], timeout_s)
        assert left == 0, f"the updater left {left} events unconsumed"


@pytest.fixture(scope="module")
def updater(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport
) -> Iterator[UpdaterThread]:
    control = UpdaterThread(settings, redis_conn)
    yield control
    control.stop()


@pytest.fixture(scope="module")
def api_url(settings: Settings, trained: BatchReport) -> Iterator[str]:
    """The real app behind uvicorn on a free loopback port, in a thread."""
    with serving(create_app(settings)) as url:
        yield url


def _show(report: SimulationReport) -> None:
    Console(width=150).print(report_table(report))


def _recommend(
    url: str, customer: str, client: httpx.Client | None = None
) -> tuple[list[str], list[str], Any]:
    """Ids, product groups and applied_event_id of the customer's top 10."""
    get = client.get if client is not None else httpx.get
    body = get(f"{url}/recommend/{customer}", params={"k": 10}, timeout=10).json()
    items = body["items"]
    return (
        [i["article_id"] for i in items],
        [i["metadata"]["product_group_name"] for i in items],
        body["applied_event_id"],
    )


def test_drift_shows_in_recommendations_once_the_updater_applied_it(
    api_url: str, input_dir: Path, updater: UpdaterThread
) -> None:
    updater.stop()  # a no-op unless another test of this module started it
    config = SimulationConfig(
        input_dir=input_dir,
        api_url=api_url,
        rate_per_s=60,
        duration_s=3.0,
        views_per_session=(1, 1),
        think_time_s=0.0,
        purchase_probability=1.0,
        bad_request_share=0.0,
        new_customer_share=0.0,
        drift_fraction=0.5,
        drift_at=0.0,
        freshness_every=0,  # nothing applies the events while the updater is stopped
        seed=5,
    )
    plan = load_population(input_dir, seed=config.seed, drift_fraction=config.drift_fraction)
    with httpx.Client() as client:
        drifting = [plan.customer_ids[row] for row in plan.drift.customers.tolist()]
        before = {c: _recommend(api_url, c, client) for c in drifting}

    report = simulate(config)
    _show(report)
    assert report.errors == {}, report.error_samples
    assert report.drift.planned == len(plan.drift.customers)
    drifted = [c for c in report.drift.customers if c.purchases_after_drift >= 2]
    assert len(drifted) >= 3, report.drift.customers
    for c in report.drift.customers:
        row = plan.customer_ids.index(c.customer_id)
        assert c.to_group == plan.catalogue.groups[plan.drift.target[row]]

    # Without the updater, nothing the customers bought shows.
    for c in drifted:
        assert _recommend(api_url, c.customer_id) == before[c.customer_id]

    updater.start()
    updater.catch_up()
    share_before = share_after = 0.0
    for c in drifted:
        _, groups_before, _ = before[c.customer_id]
        _, groups_after, applied = _recommend(api_url, c.customer_id)
        assert applied is not None and applied.startswith(f"sim-{report.run_id}-")
        share_before += groups_before.count(c.to_group) / len(groups_before) / len(drifted)
        share_after += groups_after.count(c.to_group) / len(groups_after) / len(drifted)
    print(f"drift group share in the top 10 of {len(drifted)} drifted customers: "
          f"{share_before:.2f} before, {share_after:.2f} after")  # fmt: skip
    assert share_after >= share_before + 0.2


def _purchase_applied(url: str, customer: str, article: str, timeout_s: float = 30.0) -> None:
    event_id = f"warm-up-{uuid.uuid4().hex}"
    body = {"customer_id": customer, "article_id": article, "event_id": event_id}
    assert httpx.post(f"{url}/events/purchase", json=body, timeout=10).status_code == 202
    deadline = time.monotonic() + timeout_s
    while _recommend(url, customer)[2] != event_id:
        assert time.monotonic() < deadline, "the updater did not apply a purchase in time"
        time.sleep(0.05)


def test_load_with_the_updater_is_measured_without_errors(
    api_url: str,
    input_dir: Path,
    updater: UpdaterThread,
    known_customer: str,
    transactions: pd.DataFrame,
    tmp_path: Path,
) -> None:
    updater.start()
    updater.catch_up()  # a new group starts from the topic's beginning: the suite's events
    # Until its consumer has joined the group, nothing is applied: one purchase through.
    _purchase_applied(api_url, known_customer, str(transactions["article_id"].iloc[0]))
    config = SimulationConfig(
        input_dir=input_dir,
        api_url=api_url,
        rate_per_s=40,
        duration_s=3.5,
        views_per_session=(1, 3),
        think_time_s=0.05,
        bad_request_share=0.05,
        freshness_every=3,
        seed=3,
    )
    report = simulate(config)
    _show(report)

    assert report.stopped_by == "duration"
    assert report.elapsed_s >= config.duration_s
    # Poisson arrivals: 140 expected; far fewer means the pacing is wrong.
    assert report.events_accepted >= 70, report.events_accepted
    assert report.events_accepted == report.events_posted
    assert report.events_per_s == pytest.approx(report.events_accepted / report.elapsed_s, rel=1e-2)
    assert report.errors == {}, report.error_samples
    for kind, counts in report.status_counts.items():
        assert counts.get("5xx", 0) == 0 and counts.get("transport", 0) == 0, kind
    assert report.status_counts["purchase"] == {"2xx": report.events_accepted}

    # The weaker signals go through their own routes (default shares), all accepted.
    for kind in ("view", "add_to_cart"):
        assert set(report.status_counts[kind]) == {"2xx"}, kind

    bad = report.bad_requests
    assert bad.sent > 0 and bad.refused_4xx == bad.sent
    assert report.status_counts["bad"] == {"4xx": bad.sent}

    fresh = report.freshness
    assert fresh.probed >= report.events_accepted // 3 - fresh.skipped - 1
    assert fresh.completed > 0 and fresh.timed_out == 0 and fresh.abandoned == 0
    assert fresh.p50_ms is not None and fresh.p99_ms is not None
    assert 0 < fresh.p50_ms <= fresh.p99_ms < config.freshness_timeout_s * 1000

    for kind in ("recommend", "purchase", "probe", "bad"):
        lat = report.latency[kind]
        assert lat.count == sum(report.status_counts[kind].values())
        assert lat.p50_ms is not None and lat.p90_ms is not None and lat.p99_ms is not None
        assert 0 < lat.p50_ms <= lat.p90_ms <= lat.p99_ms
    assert report.requests == sum(sum(c.values()) for c in report.status_counts.values())

    path = tmp_path / "simulation.json"
    path.write_text(report.to_json())
    saved = json.loads(path.read_text())
    assert saved["freshness"]["p99_ms"] == fresh.p99_ms
    assert set(saved["status_counts"]["recommend"]) <= set(STATUS_CLASSES)
    print(json.dumps({k: saved[k] for k in ("events_per_s", "freshness", "latency")}, indent=1))


def test_count_bounds_stop_the_run_early(api_url: str, input_dir: Path) -> None:
    base = {"input_dir": input_dir, "api_url": api_url, "rate_per_s": 50.0, "duration_s": 20.0,
            "think_time_s": 0.01, "freshness_every": 0}  # fmt: skip
    started = time.monotonic()
    report = simulate(SimulationConfig(**base, max_events=5))  # type: ignore[arg-type]
    assert report.stopped_by == "max_events"
    assert 0 < report.events_posted <= 5
    report = simulate(SimulationConfig(**base, max_requests=25))  # type: ignore[arg-type]
    assert report.stopped_by == "max_requests"
    assert 0 < report.requests <= 25
    assert time.monotonic() - started < 10


def test_an_absent_api_is_one_clear_error(input_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiUnavailableError, match=f"no API at {url}"):
        simulate(SimulationConfig(input_dir=input_dir, api_url=url, duration_s=1))
