"""Both item-index backends behind one interface: the embedded Qdrant Edge engine and a
Qdrant server through qdrant-client (its local mode stands in for the server and runs the
same client code, the async client's included). Exact search on both must give the same
answers, and each backend's awaitable reads the same as its blocking ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from recsys.index.base import IndexedItem, ItemFilter, ItemIndex, Mmr, ScoredItem
from recsys.index.edge import EdgeIndexWriter, EdgeItemIndex
from recsys.index.qdrant_server import (
    LOCAL_MODE,
    QdrantServerBackend,
    ServerItemIndex,
    local_async_client,
)

DIM, ITEMS = 16, 400
GROUPS = ["Upper body", "Lower body", "Shoes", "Accessories"]
TYPES = ["Sweater", "Trousers", "Sneakers", "Bag", "Hat", "Skirt"]


def _items() -> list[IndexedItem]:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(ITEMS, DIM)).astype(np.float32)
    return [
        IndexedItem(
            f"{i:010d}",
            vectors[i],
            {
                "product_group_name": GROUPS[i % len(GROUPS)],
                "product_type_name": TYPES[i % len(TYPES)],
                "prod_name": f"item {i}",
                # Every 7th sold out; the batch writes true for the rest, older versions
                # nothing.
                **({"available": i % 7 != 0} if i % 2 else {}),
            },
        )
        for i in range(ITEMS)
    ]


UNAVAILABLE = {f"{i:010d}" for i in range(ITEMS) if i % 2 and i % 7 == 0}


RULES = [
    ItemFilter(),
    ItemFilter(product_groups=["Shoes"]),
    ItemFilter(product_types=["Bag", "Hat"]),
    ItemFilter(exclude_ids=[f"{i:010d}" for i in range(0, ITEMS, 3)]),
    ItemFilter(exclude_groups=["Upper body"], exclude_types=["Skirt"]),
    ItemFilter(product_groups=["Lower body", "Accessories"], exclude_types=["Bag"],
               exclude_ids=[f"{i:010d}" for i in range(50)]),
]  # fmt: skip


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[ItemIndex, ItemIndex]:
    items = _items()
    folder = tmp_path_factory.mktemp("edge")
    edge_writer = EdgeIndexWriter(folder / "shard", DIM)
    client = QdrantClient(location=LOCAL_MODE)
    backend = QdrantServerBackend(client, "congruence")
    server_writer = backend.writer("v1", DIM)
    for writer in (edge_writer, server_writer):
        writer.upsert(items)
        writer.finish()
    edge = EdgeItemIndex("v1", folder / "shard", folder / "serving", exact=True)
    reads = local_async_client(client)
    server = ServerItemIndex(client, backend.collection("v1"), "v1", reads=reads, exact=True)
    return edge, server


def _same_items(a: Sequence[ScoredItem], b: Sequence[ScoredItem]) -> None:
    assert [(x.article_id, x.score, x.metadata) for x in a] == [
        (x.article_id, x.score, x.metadata) for x in b
    ]
    for x, y in zip(a, b, strict=True):
        assert (x.vector is None) == (y.vector is None)
        if x.vector is not None and y.vector is not None:
            np.testing.assert_array_equal(x.vector, y.vector)


def _search(index: ItemIndex, *args: Any, **kwargs: Any) -> list[ScoredItem]:
    """The index's answer, the same from search() and from asearch() on an event loop."""
    found = index.search(*args, **kwargs)
    _same_items(found, asyncio.run(index.asearch(*args, **kwargs)))
    return found


@pytest.mark.parametrize("rules", RULES, ids=range(len(RULES)))
def test_exact_search_gives_the_same_ids_and_scores(
    both: tuple[ItemIndex, ItemIndex], rules: ItemFilter
) -> None:
    edge, server = both
    rng = np.random.default_rng(11)
    for _ in range(5):
        query = rng.normal(size=DIM).astype(np.float32)
        a, b = _search(edge, query, 25, rules), _search(server, query, 25, rules)
        assert [x.article_id for x in a] == [x.article_id for x in b]
        np.testing.assert_allclose([x.score for x in a], [x.score for x in b], rtol=1e-4)
        assert [x.metadata for x in a] == [x.metadata for x in b]
        assert all(rules.allows(x.article_id, x.metadata) for x in a)
        assert not UNAVAILABLE & {x.article_id for x in a}
        assert len(a) == 25


def test_retrieve_gives_the_same_payloads(both: tuple[ItemIndex, ItemIndex]) -> None:
    edge, server = both
    wanted = ["0000000001", "0000000200", "9999999999"]
    assert edge.retrieve(wanted) == server.retrieve(wanted)
    assert set(edge.retrieve(wanted)) == {"0000000001", "0000000200"}
    for index in both:
        assert asyncio.run(index.aretrieve(wanted)) == index.retrieve(wanted)


def test_server_versions_are_collections_behind_one_alias(tmp_path: Path) -> None:
    client = QdrantClient(location=LOCAL_MODE)
    backend = QdrantServerBackend(client, f"items_{uuid.uuid4().hex[:6]}")
    for version in ("v1", "v2"):
        writer = backend.writer(version, DIM)
        writer.upsert(_items()[:10])
        writer.finish()
    assert backend.live() is None
    backend.publish("v1")
    assert backend.live() == backend.collection("v1")
    backend.publish("v2")  # one atomic alias change
    assert backend.live() == backend.collection("v2")
    hits = client.query_points(backend.alias, query=[1.0] * DIM, limit=3).points
    assert len(hits) == 3  # the alias answers queries like a collection
    with pytest.raises(FileExistsError):
        backend.writer("v2", DIM)
    backend.drop("v1")
    assert not client.collection_exists(backend.collection("v1"))
    with pytest.raises(FileNotFoundError):
        backend.open("v1")


@pytest.mark.parametrize("relevance", [0.9, 0.5, 0.0])
@pytest.mark.parametrize("rules", [RULES[0], RULES[5]], ids=["no-rules", "rules"])
def test_mmr_picks_the_same_items_in_the_same_order(
    both: tuple[ItemIndex, ItemIndex], relevance: float, rules: ItemFilter
) -> None:
    """Both engines' MMR, with the API's diversity_lambda converted in one place."""
    edge, server = both
    mmr = Mmr(relevance=relevance, candidates=100)
    rng = np.random.default_rng(17)
    for _ in range(5):
        query = rng.normal(size=DIM).astype(np.float32)
        a = _search(edge, query, 10, rules, mmr=mmr, with_vectors=True)
        b = _search(server, query, 10, rules, mmr=mmr, with_vectors=True)
        assert [x.article_id for x in a] == [x.article_id for x in b]
        np.testing.assert_allclose([x.score for x in a], [x.score for x in b], rtol=1e-4)
        for x, y in zip(a, b, strict=True):
            assert x.vector is not None and y.vector is not None
            np.testing.assert_allclose(x.vector, y.vector, rtol=1e-6)
    plain = edge.search(query, 10, rules)
    assert [x.article_id for x in edge.search(query, 10, rules, mmr=Mmr(1.0, 100))] == [
        x.article_id for x in plain
    ]


def test_vectors_come_back_as_stored(both: tuple[ItemIndex, ItemIndex]) -> None:
    edge, server = both
    items = {i.article_id: i.vector for i in _items()[:5]}
    for index in (edge, server):
        got = index.vectors([*items, "9999999999"])
        awaited = asyncio.run(index.avectors([*items, "9999999999"]))
        assert set(got) == set(awaited) == set(items)
        for article_id, vector in items.items():
            np.testing.assert_allclose(got[article_id], vector, rtol=1e-6)
            np.testing.assert_array_equal(awaited[article_id], got[article_id])


def test_both_know_the_unavailable_items_and_follow_a_change(
    both: tuple[ItemIndex, ItemIndex],
) -> None:
    edge, server = both
    assert set(edge.unavailable()) == set(server.unavailable()) == UNAVAILABLE
    query = np.ones(DIM, dtype=np.float32)
    best = edge.search(query, 1, ItemFilter())[0]
    flipped = next(i for i in _items() if i.article_id == best.article_id)
    for index in both:
        index.upsert([IndexedItem(flipped.article_id, flipped.vector,
                                  {**flipped.payload, "available": False})])  # fmt: skip
    try:
        for index in both:
            assert best.article_id in index.unavailable()
            found = _search(index, query, 10, ItemFilter(), mmr=Mmr(0.5, 40))
            assert best.article_id not in {x.article_id for x in found}
        a, b = (_search(index, query, 10, ItemFilter()) for index in both)
        assert [x.article_id for x in a] == [x.article_id for x in b]
    finally:
        for index in both:
            index.upsert([flipped])
    assert set(edge.unavailable()) == set(server.unavailable()) == UNAVAILABLE
