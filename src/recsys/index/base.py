"""What every item-index backend does, and the values it speaks in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from recsys.ids import item_point_id

# The payload field that says how an item got its vector: from purchases, or placed from
# its metadata by the content model.
PLACED_BY_FIELD: Final = "placed_by"
COLLABORATIVE: Final = "collaborative"
CONTENT: Final = "content"

# Index tuning both backends share (sizes in KB of vectors, Qdrant's unit).
# A collection below ~8k items of 32 dims is scanned whole: as fast as a graph, and exact.
HNSW_FROM_KB = 1_000
# A filtered query whose matching points' vectors add up to less than this scans them;
# above, it walks the graph with the filter. At 72k x 32 a scan of 7.6k matches took
# 800 µs against 110-180 µs on the graph (recall@10 >= 0.95 for every product group and
# type); at 300 KB (2.4k matches) both take ~150 µs.
FILTERED_SCAN_BELOW_KB = 300
# The HNSW graph: 16 links a node, and a build beam (ef_construct) of 400 rather than
# Qdrant's 100. At 100k x 32, 200 instead of 100 took the index 20 -> 27 s and made
# filtered walks both better and cheaper: the worst product group's recall@10 0.934 ->
# 0.968 with a search beam of 96 instead of 128; unfiltered recall stays 0.995. At 100k x
# 16 (what the batch's search chose on the generated full shape) a graph built at 200
# held the worst group at 0.95 for any search beam up to 384, and 400 (12 -> 21-25 s)
# reached 0.95 at 128 and 0.96 at 192 (docs/benchmarks.md, set H); 24 links instead of
# 16 bought no more.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 400
# HNSW beam width (ef) per query shape, where the batch's choice (recsys.index.beams)
# starts. At 72k x 32 (docs/benchmarks.md), unfiltered, ef 32 reaches recall@10 0.995
# against exact search in 94 µs (64: 0.999 in 154 µs; 128: 1.000 in 241 µs). A filter
# on product group or type needs a wider beam; with the graph built at ef_construct 100
# a wider one bought little (ef 128 / 192 / 256 / 384: worst group 0.939 / 0.941 /
# 0.943 / 0.946, the same group throughout: its graph, not the beam), which is what the
# build beam above fixed.
SEARCH_EF = 32
FILTERED_SEARCH_EF = 96


@dataclass(frozen=True)
class ItemFilter:
    """Business rules applied inside the index: keep only these groups/types, drop those."""

    product_groups: Sequence[str] = ()
    product_types: Sequence[str] = ()
    exclude_ids: Sequence[str] = ()
    exclude_groups: Sequence[str] = ()
    exclude_types: Sequence[str] = ()

    def allows(self, article_id: str, payload: Mapping[str, Any]) -> bool:
        """The same rules applied to an item held outside the index (the trending list)."""
        group = payload.get("product_group_name")
        kind = payload.get("product_type_name")
        return not (
            (self.product_groups and group not in self.product_groups)
            or (self.product_types and kind not in self.product_types)
            or article_id in self.exclude_ids
            or group in self.exclude_groups
            or kind in self.exclude_types
        )


@dataclass(frozen=True)
class Beams:
    """The HNSW beam per query shape, which the batch chooses for each version
    (recsys.index.beams): a filter on product groups or types needs a wider one than a
    query without (exclusions leave almost every point in, like no filter)."""

    unfiltered: int = SEARCH_EF
    filtered: int = FILTERED_SEARCH_EF

    def for_rules(self, rules: ItemFilter) -> int:
        return self.filtered if rules.product_groups or rules.product_types else self.unfiltered


def as_floats(vector: npt.NDArray[Any]) -> list[float]:
    """A vector as the engines' clients take it: Python floats of float32 precision."""
    values: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return values


@dataclass(frozen=True)
class IndexedItem:
    """An item ready for the index: its vector and the payload that filters and describes it."""

    article_id: str
    vector: npt.NDArray[Any]
    payload: Mapping[str, Any]

    def as_point(self) -> tuple[int, list[float], dict[str, Any]]:
        """(point id, vector, payload) as every backend stores it: the id derived from the
        article id, which also travels in the payload."""
        return (
            item_point_id(self.article_id),
            as_floats(self.vector),
            {"article_id": self.article_id, **self.payload},
        )


def vectors_by_article(
    records: Iterable[tuple[Mapping[str, Any] | None, Any]],
) -> dict[str, npt.NDArray[np.float32]]:
    """Stored (payload, vector) pairs as vectors keyed by article id."""
    return {
        str((payload or {})["article_id"]): np.asarray(vector, dtype=np.float32)
        for payload, vector in records
        if vector is not None
    }


def payloads_by_article(payloads: Iterable[Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Stored payloads keyed by their article id (which leaves the payload)."""
    out: dict[str, dict[str, Any]] = {}
    for stored in payloads:
        payload = dict(stored or {})
        out[str(payload.pop("article_id"))] = payload
    return out


@dataclass(frozen=True)
class Mmr:
    """Maximal marginal relevance over the `candidates` nearest items.

    `relevance` is the API's diversity_lambda: 1 ranks by relevance alone, 0 by diversity
    alone. Qdrant Edge takes it as is (`lambda_`); the Qdrant server's `diversity` runs
    the other way, and `server_diversity` is the one place that converts.
    """

    relevance: float
    candidates: int

    @property
    def server_diversity(self) -> float:
        return 1.0 - self.relevance


@dataclass(frozen=True)
class ScoredItem:
    article_id: str
    score: float  # the dot product with the query, also when MMR picked the order
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: npt.NDArray[np.float32] | None = None

    @classmethod
    def from_point(
        cls, score: float, payload: Mapping[str, Any] | None, vector: Any = None
    ) -> ScoredItem:
        """A hit as an index returns it: the article id travels in the payload."""
        metadata = dict(payload or {})
        article_id = str(metadata.pop("article_id"))
        return cls(
            article_id=article_id,
            score=float(score),
            metadata=metadata,
            vector=None if vector is None else np.asarray(vector, dtype=np.float32),
        )


class StoredPoint(Protocol):
    @property
    def payload(self) -> Any: ...

    @property
    def vector(self) -> Any: ...


class RecordLookups:
    """retrieve() and vectors(), and their awaitable forms, for a backend that can fetch
    stored points by id."""

    def _records(self, article_ids: Sequence[str], with_vectors: bool) -> Sequence[StoredPoint]:
        raise NotImplementedError

    async def _arecords(
        self, article_ids: Sequence[str], with_vectors: bool
    ) -> Sequence[StoredPoint]:
        """_records() for the event loop, without blocking it."""
        raise NotImplementedError

    def retrieve(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return payloads_by_article(r.payload for r in self._records(article_ids, False))

    def vectors(self, article_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        return vectors_by_article((r.payload, r.vector) for r in self._records(article_ids, True))

    async def aretrieve(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = await self._arecords(article_ids, False)
        return payloads_by_article(r.payload for r in records)

    async def avectors(self, article_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        records = await self._arecords(article_ids, True)
        return vectors_by_article((r.payload, r.vector) for r in records)


class ItemIndex(Protocol):
    """A loaded model version of the item index: queried, and changed only by upsert.

    The reads come in two forms with the same answers: search(), retrieve() and vectors()
    for blocking callers (the batch, worker threads), and asearch(), aretrieve() and
    avectors() for the event loop, which must never wait on the network: a Qdrant server
    awaits its async client there, while the embedded engine answers inline (a query of
    ~60 µs; a thread hop would add ~125 µs to it, docs/architecture.md).
    """

    version: str
    beams: Beams  # the HNSW beam per query shape (recsys.index.beams)

    def search(
        self,
        vector: npt.NDArray[Any],
        k: int,
        rules: ItemFilter,
        *,
        mmr: Mmr | None = None,
        with_vectors: bool = False,
        beam: int | None = None,
    ) -> list[ScoredItem]:
        """The k items with the highest dot product with vector that pass rules, or with
        mmr the k the engine's MMR picks from its candidates (in its order). `beam` is the
        HNSW beam width for this query; None: the version's beam for the query's shape."""
        ...

    def retrieve(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given items that exist in this version."""
        ...

    def vectors(self, article_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Vectors of the given items that exist in this version."""
        ...

    async def asearch(
        self,
        vector: npt.NDArray[Any],
        k: int,
        rules: ItemFilter,
        *,
        mmr: Mmr | None = None,
        with_vectors: bool = False,
        beam: int | None = None,
    ) -> list[ScoredItem]:
        """search(), awaited on the event loop."""
        ...

    async def aretrieve(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """retrieve(), awaited on the event loop."""
        ...

    async def avectors(self, article_ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """vectors(), awaited on the event loop."""
        ...

    def unavailable(self) -> AbstractSet[str]:
        """Articles of this version marked unavailable (recsys.availability), which no
        query returns: the trending lists held in memory leave them out too."""
        ...

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        """Add or replace items of this version (articles from the catalog topic). On Qdrant
        Edge it changes this process's copy only: call it where the copy is queried."""
        ...

    def check(self) -> None:
        """Raise when the index cannot answer (a server down, a shard gone)."""
        ...

    def close(self) -> None: ...


class IndexBackend(Protocol):
    """Where model versions of the item index live: the embedded engine or a server."""

    def writer(self, version: str, dim: int) -> IndexWriter:
        """A writer for a new version; nothing serves it before it is published."""
        ...

    def open(self, version: str, beams: Beams | None = None) -> ItemIndex:
        """The version, loaded for serving in this process, searching with `beams` (the
        ones the batch chose for it; None: the defaults)."""
        ...

    def publish(self, version: str) -> None:
        """The version goes live (a server moves its alias to it)."""
        ...

    def drop(self, version: str) -> None:
        """The version's index is deleted (it was pruned)."""
        ...


class IndexWriter(Protocol):
    """Builds one new model version of the index; nothing serves it before finish()."""

    def upsert(self, items: Sequence[IndexedItem]) -> None: ...

    def finish(self) -> None:
        """Build the ANN structures and make the version loadable."""
        ...
