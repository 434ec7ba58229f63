"""The whole loop on a three-master Valkey Cluster (RECSYS_REDIS_CLUSTER): the batch
writes a version across the nodes, the updater applies a purchase the API took, the API
serves customers whose keys live on every node, rate limits and the experiment ledger
count there, an erasure leaves nothing on any node; and a node stopped mid-run costs only
its own customers their personal answer (flagged trending within the timeout), while
the others are served as before."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession

from batch.pipeline import run_batch
from recsys import keys
from recsys.engines.valkey_cluster import ValkeyCluster, start_valkey_cluster
from recsys.experiments.ledger import Impression, Ledger, Purchase
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.stores import SyncRedis, hot_redis_client, redis_client
from recsys.user_store import RedisUserStore
from recsys.vectors import decode
from serve.app import create_app
from serve.rate_limit import Limit, acquire
from support import own_stream, running_updater, wait_for


@pytest.fixture(scope="module")
def cluster(session_dir: Path) -> Iterator[ValkeyCluster]:
    """A cluster of this module's own: the test stops one of its nodes."""
    own = start_valkey_cluster(session_dir / f"cluster-{uuid.uuid4().hex[:6]}", masters=3)
    try:
        yield own
    finally:
        own.stop()


def _on_every_node(cluster: ValkeyCluster, customers: list[str]) -> dict[int, str]:
    """One customer per node (by port), from customers."""
    found: dict[int, str] = {}
    for customer in customers:
        found.setdefault(cluster.node_of(keys.history(customer)).port, customer)
    assert len(found) == len(cluster.nodes), "the customers' keys span every node"
    return found


def test_the_whole_loop_runs_on_a_cluster_and_survives_a_node(
    settings: Settings,
    input_dir: Path,
    spark: SparkSession,
    transactions: pd.DataFrame,
    cluster: ValkeyCluster,
    tmp_path: Path,
) -> None:
    own = own_stream(settings, tmp_path / "data").model_copy(
        update={"redis_url": cluster.url, "redis_cluster": True, "redis_timeout_s": 0.5}
    )
    client: SyncRedis = redis_client(cluster.url, 5.0, cluster=True)
    try:
        with Steps(enabled=False) as steps:
            report = run_batch(own, input_dir, RedisUserStore(client), steps, spark)
        version = report.version
        assert client.get(keys.LIVE_VERSION) == version.encode()
        buyers = [str(c) for c in transactions["customer_id"].value_counts().index[:40]]
        by_node = _on_every_node(cluster, buyers)

        with TestClient(create_app(own)) as api, running_updater(own, client):
            # Served personally, whichever node holds the customer.
            for customer in by_node.values():
                body = api.get(f"/recommend/{customer}").json()
                assert body["source"] == "personalized", (customer, body)

            # A purchase through the API reaches the updater and moves the vector.
            customer = next(iter(by_node.values()))
            bought = set(transactions.loc[transactions["customer_id"] == customer, "article_id"])
            article = next(a for a in transactions["article_id"].unique() if a not in bought)
            before = decode(client.get(keys.user_vector(version, customer)))
            event_id = f"evt-{uuid.uuid4().hex}"
            sent = {"customer_id": customer, "article_id": article, "event_id": event_id}
            assert api.post("/events/purchase", json=sent).status_code == 202
            wait_for(lambda: client.get(keys.last_event(customer)) == event_id.encode())
            after = decode(client.get(keys.user_vector(version, customer)))
            assert before is not None and after is not None
            assert not np.allclose(before, after)
            assert api.get(f"/recommend/{customer}").json()["applied_event_id"] == event_id

            _ledger_and_limits_count_on_the_cluster(own, client, by_node)

            # Erasure: none of the customer's keys left on any node.
            erased = by_node[cluster.nodes[-1].port]
            assert RedisUserStore(client).erase_customer(erased, [version]) > 0
            assert list(client.scan_iter(match=f"*{{{erased}}}*")) == []

            # A node stops: its customers get flagged trending within the timeout, the
            # others stay personal.
            down = cluster.nodes[0]
            down.process.stop()
            lost = by_node[down.port]
            started = time.monotonic()
            body = api.get(f"/recommend/{lost}").json()
            assert time.monotonic() - started < 3 * own.redis_timeout_s + 1.0
            assert (body["source"], body["fallback_reason"]) == ("trending", "redis_unavailable")
            for port, customer in by_node.items():
                if port not in (down.port, cluster.nodes[-1].port):
                    served = api.get(f"/recommend/{customer}").json()
                    assert served["source"] == "personalized", (customer, served)
    finally:
        client.close()


def _ledger_and_limits_count_on_the_cluster(
    settings: Settings, client: SyncRedis, by_node: dict[int, str]
) -> None:
    """The experiment ledger's impressions, attribution and counters, and a rate limit,
    for customers on every node (the counters live in the experiment's own slot)."""
    ledger = Ledger(3600)
    experiment = f"xp-{uuid.uuid4().hex[:6]}"
    hot = hot_redis_client(settings.redis_url or "", 2.0, cluster=True)

    async def run() -> None:
        try:
            for n, customer in enumerate(by_node.values()):
                shown = Impression(f"rec-{n}", experiment, "b", customer, [f"a{n}", "z"])
                await ledger.record_impression(hot, shown)
            limit = Limit(per_s=1.0, burst=2)
            waits = [await acquire(hot, f"addr:{experiment}", limit) for _ in range(3)]
            assert waits[:2] == [0, 0] and waits[2] > 0
        finally:
            await hot.aclose()

    asyncio.run(run())
    purchases = [
        Purchase(f"e-{n}", customer, f"a{n}") for n, customer in enumerate(by_node.values())
    ]
    credited = ledger.attribute_all_sync(client, purchases)
    assert all(c is not None and c.converted and c.first for c in credited)
    again = ledger.attribute_all_sync(client, purchases)  # redelivered: counted once
    assert all(c is not None and not c.first for c in again)
    counts = client.hgetall(keys.experiment_counts(experiment))
    n = str(len(by_node)).encode()
    assert counts == {b"i:b": n, b"p:b": n, b"c:b": n}
