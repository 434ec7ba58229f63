"""The Qdrant server backend over the network (a stub of Qdrant's REST API, tests/qdrant_stub.py):
a version's collection is created with the cluster settings, queries carry the read
consistency, and a slow server never holds up the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TypeVar

import numpy as np
import pytest
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client.models import ReadConsistencyType

from qdrant_stub import QdrantStub
from recsys.index.base import ItemFilter
from recsys.index.factory import open_backend, open_reads
from recsys.index.qdrant_server import LOCAL_MODE, Cluster, QdrantServerBackend
from recsys.settings import Settings
from support import ticks_during

# A client checks the server's version from a thread of its own, which a stub closed
# first leaves without an answer.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")

T = TypeVar("T")
DIM = 8
DELAY_S = 0.25
HIT = {"id": 1, "version": 0, "score": 2.5, "payload": {"article_id": "0000000001"}}
RECORD = {"id": 1, "payload": {"article_id": "0000000001", "product_group_name": "Shoes"}}


@pytest.fixture
def stub() -> Iterator[QdrantStub]:
    server = QdrantStub(points=[HIT], records=[RECORD])
    yield server
    server.close()


def _settings(url: str, **cluster: object) -> Settings:
    return Settings.model_validate({"qdrant_url": url, "qdrant_collection": "items", **cluster})


def test_a_version_is_created_with_the_cluster_settings_and_read_with_the_consistency(
    stub: QdrantStub,
) -> None:
    settings = _settings(
        stub.url,
        qdrant_shard_number=6,
        qdrant_replication_factor=2,
        qdrant_write_consistency_factor=2,
        qdrant_read_consistency="majority",
    )
    backend = open_backend(settings)
    backend.writer("v1", DIM)
    [created] = stub.sent("PUT", "/collections/items_v1")
    assert created.body["shard_number"] == 6
    assert created.body["replication_factor"] == 2
    assert created.body["write_consistency_factor"] == 2
    assert created.body["vectors"] == {"size": DIM, "distance": "Dot"}
    index = backend.open("v1")
    index.search(np.ones(DIM, dtype=np.float32), 5, ItemFilter())
    index.retrieve(["0000000001"])
    for read in (*stub.sent("POST", "/points/query"), *stub.sent("POST", "/points")):
        assert "consistency=majority" in read.query


def test_unset_shard_number_is_left_to_the_server(stub: QdrantStub) -> None:
    open_backend(_settings(stub.url)).writer("v1", DIM)
    [created] = stub.sent("PUT", "/collections/items_v1")
    assert created.body.get("shard_number") is None  # Qdrant: one per node
    assert (created.body["replication_factor"], created.body["write_consistency_factor"]) == (1, 1)


def test_a_write_consistency_above_the_replicas_is_a_bad_setting() -> None:
    with pytest.raises(ValidationError) as refused:
        _settings(LOCAL_MODE, qdrant_replication_factor=2, qdrant_write_consistency_factor=3)
    assert refused.value.errors()[0]["loc"] == ("qdrant_write_consistency_factor",)
    settings = _settings(LOCAL_MODE, qdrant_read_consistency="2")  # as the environment has it
    assert Cluster.of(settings).consistency == 2
    settings = _settings(LOCAL_MODE, qdrant_read_consistency="quorum")
    assert Cluster.of(settings).consistency == ReadConsistencyType.QUORUM


def test_local_mode_takes_the_cluster_settings_but_keeps_none() -> None:
    """qdrant-client's local mode has no shards or replicas: what a created collection
    reports there says nothing, which is why the stub server checks the request."""
    client = QdrantClient(location=LOCAL_MODE)
    cluster = Cluster(shard_number=3, replication_factor=2, write_consistency_factor=2)
    QdrantServerBackend(client, "local", cluster=cluster).writer("v1", DIM)
    params = client.get_collection("local_v1").config.params
    assert (params.shard_number, params.replication_factor) == (None, None)


def test_a_slow_server_leaves_the_event_loop_free(stub: QdrantStub) -> None:
    """Four reads in flight at once take one server delay, not four, and the loop keeps
    ticking; the synchronous client, awaited the same way, stops it for the whole delay
    (what serving did before it read through the async client)."""
    settings = _settings(stub.url)
    stub.collections.add("items_v1")
    stub.delay_s = DELAY_S
    query = np.ones(DIM, dtype=np.float32)

    async def run() -> tuple[float, int, int, int]:
        reads = open_reads(settings)
        assert reads is not None
        try:
            index = open_backend(settings, reads=reads).open("v1")

            async def reads_at_once() -> list[object]:
                return await asyncio.gather(
                    *(index.asearch(query, 5, ItemFilter()) for _ in range(3)),
                    index.aretrieve(["0000000001"]),
                )

            started = time.perf_counter()
            answers, free = await ticks_during(reads_at_once())
            elapsed = time.perf_counter() - started
            *hits, payloads = answers
            assert all([(h.article_id, h.score) for h in hit] == [("0000000001", 2.5)]
                       for hit in hits)  # fmt: skip
            assert payloads == {"0000000001": {"product_group_name": "Shoes"}}

            async def blocking() -> object:
                return index.search(query, 5, ItemFilter())

            _, blocked = await ticks_during(blocking())
            return elapsed, free, blocked, len(stub.sent("POST", "/points/query"))
        finally:
            await reads.close()

    elapsed, free, blocked, queries = asyncio.run(run())
    assert queries == 4
    assert elapsed < 2 * DELAY_S, elapsed  # concurrent: one delay, not four
    assert free >= 0.5 * DELAY_S / 0.01, free
    assert blocked <= 1, blocked
