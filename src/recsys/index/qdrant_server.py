"""A Qdrant server (or cluster) through qdrant-client: one collection per model version,
and an alias that names the live one.

The API queries the collection of the version whose user vectors it reads (vectors of
two versions do not share a space); the alias `<collection prefix>` follows the live
version for everyone else: dashboards, ad-hoc queries, other services.

The batch writes through the synchronous client; the serving process reads through the
async one (`async_client_for`, made in the app's lifespan), so a query waiting on the
network never holds up the event loop's other requests.

`RECSYS_QDRANT_URL=:memory:` runs qdrant-client's local mode in-process: the same client
code path without a server, for tests (one process; payload indexes are not built there,
and the cluster settings are accepted and ignored).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal

import numpy.typing as npt
from qdrant_client import AsyncQdrantClient, QdrantClient
from qdrant_client import models as qm
from qdrant_client.local.async_qdrant_local import AsyncQdrantLocal
from qdrant_client.local.qdrant_local import QdrantLocal

from recsys.availability import is_unavailable
from recsys.ids import item_point_id
from recsys.index.base import (
    FILTERED_SCAN_BELOW_KB,
    HNSW_EF_CONSTRUCT,
    HNSW_FROM_KB,
    HNSW_M,
    Beams,
    IndexedItem,
    ItemFilter,
    Mmr,
    RecordLookups,
    ScoredItem,
    as_floats,
)
from recsys.index.filters import BOOL_INDEXED_FIELDS, INDEXED_FIELDS, UNAVAILABLE, filter_spec
from recsys.settings import Settings

LOCAL_MODE = ":memory:"
# A 105k-item collection indexes in well under a minute; a server still busy after this
# is stuck or overloaded.
INDEX_BUILD_TIMEOUT_S = 1_800.0
BUILDING = frozenset({qm.CollectionStatus.YELLOW})


ReadConsistency = int | Literal["majority", "quorum", "all"]


@dataclass(frozen=True)
class Cluster:
    """How a version's collection spreads over a Qdrant cluster, fixed when the batch
    creates it (RECSYS_QDRANT_*), and how many replicas a read consults. None: the
    server's own choice (shards: one per node of the cluster at creation)."""

    shard_number: int | None = None
    replication_factor: int = 1
    write_consistency_factor: int = 1
    read_consistency: ReadConsistency = 1

    @classmethod
    def of(cls, settings: Settings) -> Cluster:
        return cls(
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency_factor,
            read_consistency=settings.qdrant_read_consistency,
        )

    @property
    def consistency(self) -> qm.ReadConsistency:
        """The read consistency as qdrant-client takes it."""
        value = self.read_consistency
        return value if isinstance(value, int) else qm.ReadConsistencyType(value)


def _timeout(timeout_s: float) -> int:
    """qdrant-client takes whole seconds."""
    return max(1, round(timeout_s))


@functools.cache
def _client(url: str, timeout_s: float, api_key: str | None) -> QdrantClient:
    """One client per server per process (a local-mode instance is shared the same way)."""
    if url == LOCAL_MODE:
        return QdrantClient(location=LOCAL_MODE)
    return QdrantClient(url=url, timeout=_timeout(timeout_s), api_key=api_key)


def _api_key(settings: Settings) -> str | None:
    return settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None


def client_for(settings: Settings) -> QdrantClient:
    """The synchronous client: the batch's writes, and blocking work off the event loop."""
    assert settings.qdrant_url
    return _client(settings.qdrant_url, settings.qdrant_timeout_s, _api_key(settings))


def async_client_for(settings: Settings) -> AsyncQdrantClient:
    """The serving path's client: a query awaits the server, and the event loop serves
    other requests meanwhile. Not cached: its connections belong to the event loop that
    uses it, so the app's lifespan makes one and closes it at the end."""
    assert settings.qdrant_url
    if settings.qdrant_url == LOCAL_MODE:
        return local_async_client(client_for(settings))
    return AsyncQdrantClient(
        url=settings.qdrant_url,
        timeout=_timeout(settings.qdrant_timeout_s),
        api_key=_api_key(settings),
    )


def local_async_client(client: QdrantClient) -> AsyncQdrantClient:
    """Local mode keeps its collections in the client object, so an async client of its own
    would see none of what the batch wrote through `client`: this one reads the same
    collections (qdrant-client's async local mode, the same code as the sync one's)."""
    reads = AsyncQdrantClient(location=LOCAL_MODE)
    local, shared = reads._client, client._client
    if not isinstance(local, AsyncQdrantLocal) or not isinstance(shared, QdrantLocal):
        raise TypeError("qdrant-client's local mode no longer keeps a QdrantLocal")
    local.collections = shared.collections
    local.aliases = shared.aliases
    return reads


def build_filter(rules: ItemFilter) -> qm.Filter | None:
    spec = filter_spec(rules)
    return None if spec is None else qm.Filter.model_validate(spec)


def upsert_points(client: QdrantClient, collection: str, items: Sequence[IndexedItem]) -> None:
    client.upsert(
        collection,
        points=[
            qm.PointStruct(id=pid, vector=vector, payload=payload)
            for pid, vector, payload in (item.as_point() for item in items)
        ],
        wait=True,
    )


class ServerIndexWriter:
    """Creates the version's collection, with keyword indexes on the filtered fields,
    sharded and replicated as `cluster` says."""

    def __init__(
        self, client: QdrantClient, collection: str, dim: int, cluster: Cluster | None = None
    ) -> None:
        if client.collection_exists(collection):
            raise FileExistsError(f"Qdrant collection {collection} already exists")
        self.client = client
        self.collection = collection
        cluster = cluster or Cluster()
        client.create_collection(
            collection,
            vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.DOT),
            shard_number=cluster.shard_number,
            replication_factor=cluster.replication_factor,
            # A write succeeds once this many replicas of its shard applied it.
            write_consistency_factor=cluster.write_consistency_factor,
            # The server's defaults (HNSW from 20 MB, filtered scans below 10 MB) would
            # scan a 100k-item catalogue whole on every query.
            optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=HNSW_FROM_KB),
            hnsw_config=qm.HnswConfigDiff(
                m=HNSW_M,
                ef_construct=HNSW_EF_CONSTRUCT,
                full_scan_threshold=FILTERED_SCAN_BELOW_KB,
            ),
        )
        if not _is_local(client):  # local mode has no payload indexes (and warns)
            for name in INDEXED_FIELDS:
                client.create_payload_index(collection, name, qm.PayloadSchemaType.KEYWORD)
            for name in BOOL_INDEXED_FIELDS:
                client.create_payload_index(collection, name, qm.PayloadSchemaType.BOOL)

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        upsert_points(self.client, self.collection, items)

    def finish(self) -> None:
        """The server builds HNSW in the background: wait while it does (the batch then
        measures the beams on the built graph, and serves from it). Grey (optimisation
        possible but not triggered) will not change by waiting; red is a failure."""
        deadline = time.monotonic() + INDEX_BUILD_TIMEOUT_S
        while (status := self.client.get_collection(self.collection).status) in BUILDING:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Qdrant did not finish indexing {self.collection} within "
                    f"{INDEX_BUILD_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.5)
        if status == qm.CollectionStatus.RED:
            raise RuntimeError(f"Qdrant reports collection {self.collection} as failed (red)")


class ServerItemIndex(RecordLookups):
    """One version's collection on the server, as the serving process sees it: opened
    (off the event loop) and written through `client`, read on the event loop through
    `reads` (without one, the awaitable reads run `client` in a worker thread)."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        version: str,
        *,
        reads: AsyncQdrantClient | None = None,
        exact: bool = False,
        beams: Beams | None = None,
        consistency: qm.ReadConsistency | None = None,
    ) -> None:
        if not client.collection_exists(collection):
            raise FileNotFoundError(f"Qdrant collection {collection} does not exist")
        self.client = client
        self.reads = reads
        self.collection = collection
        self.version = version
        self._consistency = consistency
        # Local mode always scores every point and warns about search parameters.
        self._local = _is_local(client)
        self._exact = exact
        self.beams = beams or Beams()
        # Kept in step by upsert(): every serving process applies the same catalog topic.
        self._unavailable = self._marked_unavailable()

    def _marked_unavailable(self) -> set[str]:
        found: set[str] = set()
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=qm.Filter(must=[qm.FieldCondition.model_validate(UNAVAILABLE)]),
                limit=1_000,
                offset=offset,
                with_payload=["article_id"],
                with_vectors=False,
                consistency=self._consistency,
            )
            found.update(str((r.payload or {})["article_id"]) for r in records)
            if offset is None:
                return found

    def unavailable(self) -> AbstractSet[str]:
        return self._unavailable

    def _query(
        self,
        vector: npt.NDArray[Any],
        k: int,
        rules: ItemFilter,
        mmr: Mmr | None,
        with_vectors: bool,
        beam: int | None,
    ) -> dict[str, Any]:
        """query_points' arguments, the same for both clients."""
        values = as_floats(vector)
        return {
            "collection_name": self.collection,
            "query": (
                qm.NearestQuery(
                    nearest=values,
                    mmr=qm.Mmr(diversity=mmr.server_diversity, candidates_limit=mmr.candidates),
                )
                if mmr is not None
                else values
            ),
            "query_filter": build_filter(rules),
            "limit": k,
            "with_payload": True,
            "with_vectors": with_vectors,
            "search_params": None
            if self._local
            else qm.SearchParams(hnsw_ef=beam or self.beams.for_rules(rules), exact=self._exact),
            "consistency": self._consistency,
        }

    @staticmethod
    def _hits(response: qm.QueryResponse, with_vectors: bool) -> list[ScoredItem]:
        return [
            ScoredItem.from_point(p.score, p.payload, p.vector if with_vectors else None)
            for p in response.points
        ]

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
        query = self._query(vector, k, rules, mmr, with_vectors, beam)
        return self._hits(self.client.query_points(**query), with_vectors)

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
        if self.reads is None:
            return await asyncio.to_thread(
                self.search, vector, k, rules, mmr=mmr, with_vectors=with_vectors, beam=beam
            )
        query = self._query(vector, k, rules, mmr, with_vectors, beam)
        return self._hits(await self.reads.query_points(**query), with_vectors)

    def _lookup(self, article_ids: Sequence[str], with_vectors: bool) -> dict[str, Any]:
        """retrieve's arguments, the same for both clients."""
        return {
            "collection_name": self.collection,
            "ids": [item_point_id(a) for a in article_ids],
            "with_payload": True,
            "with_vectors": with_vectors,
            "consistency": self._consistency,
        }

    def _records(self, article_ids: Sequence[str], with_vectors: bool) -> list[qm.Record]:
        return self.client.retrieve(**self._lookup(article_ids, with_vectors))

    async def _arecords(self, article_ids: Sequence[str], with_vectors: bool) -> list[qm.Record]:
        if self.reads is None:
            return await asyncio.to_thread(self._records, article_ids, with_vectors)
        return await self.reads.retrieve(**self._lookup(article_ids, with_vectors))

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        """The collection is shared: every serving process writes the same points."""
        upsert_points(self.client, self.collection, items)
        for item in items:
            if is_unavailable(item.payload):
                self._unavailable.add(item.article_id)
            else:
                self._unavailable.discard(item.article_id)

    def check(self) -> None:
        if not self.client.collection_exists(self.collection):
            raise FileNotFoundError(f"Qdrant collection {self.collection} is gone")

    def close(self) -> None:
        """The clients are shared by the process; nothing to release per version."""


def _is_local(client: QdrantClient) -> bool:
    return client.init_options.get("location") == LOCAL_MODE


class QdrantServerBackend:
    """Model versions as collections `<prefix>_<version>`; the alias `<prefix>` is live.
    `reads` is the serving process's async client, which the versions it opens read
    through; `cluster` shapes the collections the batch creates."""

    def __init__(
        self,
        client: QdrantClient,
        prefix: str,
        *,
        cluster: Cluster | None = None,
        reads: AsyncQdrantClient | None = None,
    ) -> None:
        self.client = client
        self.alias = prefix
        self.cluster = cluster or Cluster()
        self.reads = reads

    def collection(self, version: str) -> str:
        return f"{self.alias}_{version}"

    def writer(self, version: str, dim: int) -> ServerIndexWriter:
        return ServerIndexWriter(self.client, self.collection(version), dim, self.cluster)

    def open(self, version: str, beams: Beams | None = None) -> ServerItemIndex:
        return ServerItemIndex(
            self.client,
            self.collection(version),
            version,
            reads=self.reads,
            beams=beams,
            consistency=self.cluster.consistency,
        )

    def publish(self, version: str) -> None:
        """Point the alias at the version's collection in one atomic change."""
        changes: list[qm.AliasOperations] = [
            qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.alias))
        ]
        if self.live() is None:
            changes = []
        changes.append(
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(
                    collection_name=self.collection(version), alias_name=self.alias
                )
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=changes)

    def live(self) -> str | None:
        """The collection the alias names, if any."""
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        return None

    def drop(self, version: str) -> None:
        if self.client.collection_exists(self.collection(version)):
            self.client.delete_collection(self.collection(version))
