"""ItemIndex.upsert on both backends (Qdrant Edge, and qdrant-client's local mode for a
server): a loaded version takes a new item and a changed one, and both answer alike, on
the event loop's reads too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from recsys.index.base import IndexedItem, ItemFilter, ItemIndex
from recsys.index.edge import EdgeIndexWriter, EdgeItemIndex
from recsys.index.qdrant_server import (
    LOCAL_MODE,
    QdrantServerBackend,
    ServerItemIndex,
    local_async_client,
)

DIM, ITEMS = 8, 120
GROUPS = ["Upper body", "Lower body", "Shoes"]


def _item(i: int, vector: np.ndarray, group: str | None = None) -> IndexedItem:
    payload = {"product_group_name": group or GROUPS[i % 3], "prod_name": f"item {i}"}
    return IndexedItem(f"{i:010d}", vector.astype(np.float32), payload)


@pytest.fixture
def both(tmp_path: Path) -> Iterator[list[ItemIndex]]:
    rng = np.random.default_rng(3)
    items = [_item(i, rng.normal(size=DIM)) for i in range(ITEMS)]
    edge_writer = EdgeIndexWriter(tmp_path / "shard", DIM)
    client = QdrantClient(location=LOCAL_MODE)
    backend = QdrantServerBackend(client, f"upsert_{tmp_path.name[-12:]}")
    server_writer = backend.writer("v1", DIM)
    for writer in (edge_writer, server_writer):
        writer.upsert(items)
        writer.finish()
    edge = EdgeItemIndex("v1", tmp_path / "shard", tmp_path / "serving", exact=True)
    reads = local_async_client(client)
    server = ServerItemIndex(client, backend.collection("v1"), "v1", reads=reads, exact=True)
    yield [edge, server]
    edge.close()


def test_a_new_item_is_searchable_at_once_with_its_payload(both: list[ItemIndex]) -> None:
    query = np.ones(DIM, dtype=np.float32)
    new = IndexedItem(
        "new-article", query * 10, {"product_group_name": "Shoes", "placed_by": "content"}
    )
    answers = []
    for index in both:
        index.upsert([new])
        hits = index.search(query, 5, ItemFilter(product_groups=["Shoes"]))
        assert hits[0].article_id == "new-article"
        assert hits[0].metadata == {"product_group_name": "Shoes", "placed_by": "content"}
        assert hits[0].score == pytest.approx(10.0 * DIM, rel=1e-5)
        assert index.retrieve(["new-article"]) == {"new-article": hits[0].metadata}
        np.testing.assert_allclose(index.vectors(["new-article"])["new-article"], query * 10)
        awaited = asyncio.run(index.asearch(query, 5, ItemFilter(product_groups=["Shoes"])))
        assert [(h.article_id, h.score) for h in awaited] == [(h.article_id, h.score) for h in hits]
        assert asyncio.run(index.aretrieve(["new-article"])) == {"new-article": hits[0].metadata}
        answers.append([(h.article_id, round(h.score, 4)) for h in hits])
    assert answers[0] == answers[1]


def test_a_replaced_payload_keeps_the_vector_and_its_scores(both: list[ItemIndex]) -> None:
    query = np.random.default_rng(9).normal(size=DIM).astype(np.float32)
    for index in both:
        before = index.search(query, 10, ItemFilter())
        target = before[3]
        vector = index.vectors([target.article_id])[target.article_id]
        changed = {**target.metadata, "prod_name": "renamed"}
        index.upsert([IndexedItem(target.article_id, vector, changed)])
        after = index.search(query, 10, ItemFilter())
        assert [(h.article_id, h.score) for h in after] == [(h.article_id, h.score) for h in before]
        assert after[3].metadata == changed
        assert index.retrieve([target.article_id])[target.article_id]["prod_name"] == "renamed"


def test_edge_catalogue_grows_only_for_new_items(both: list[ItemIndex]) -> None:
    edge = both[0]
    assert isinstance(edge, EdgeItemIndex)
    size = len(edge.catalog)
    vector = edge.vectors(["0000000001"])["0000000001"]
    edge.upsert([IndexedItem("0000000001", vector, {"product_group_name": "Shoes"})])
    assert len(edge.catalog) == size
    edge.upsert([IndexedItem("fresh", vector, {"product_group_name": "Shoes"})])
    assert len(edge.catalog) == size + 1
    np.testing.assert_allclose(edge.vectors(["fresh"])["fresh"], vector)
