"""A Qdrant server (or cluster) through qdrant-client: one collection per model version,
and an alias that names the live one.

The API queries the collection of the version whose user vectors it reads (vectors of
two versions do not share a space); the alias `<collection prefix>` follows the live
version for everyone else: dashboards, ad-hoc queries, other services.

`RECSYS_QDRANT_URL=:memory:` runs qdrant-client's local mode in-process: the same client
code path without a server, for tests (one process; payload indexes are not built there).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import numpy.typing as npt
from qdrant_client import QdrantClient
from qdrant_client import models as qm

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


@functools.cache
def _client(url: str, timeout_s: float, api_key: str | None) -> QdrantClient:
    """One client per server per process (a local-mode instance is shared the same way)."""
    if url == LOCAL_MODE:
        return QdrantClient(location=LOCAL_MODE)
    return QdrantClient(url=url, timeout=max(1, round(timeout_s)), api_key=api_key)


def client_for(settings: Settings) -> QdrantClient:
    assert settings.qdrant_url
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return _client(settings.qdrant_url, settings.qdrant_timeout_s, key)


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
    """Creates the version's collection, with keyword indexes on the filtered fields."""

    def __init__(self, client: QdrantClient, collection: str, dim: int) -> None:
        if client.collection_exists(collection):
            raise FileExistsError(f"Qdrant collection {collection} already exists")
        self.client = client
        self.collection = collection
        client.create_collection(
            collection,
            vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.DOT),
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
    """One version's collection on the server, as the serving process sees it."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        version: str,
        *,
        exact: bool = False,
        beams: Beams | None = None,
    ) -> None:
        if not client.collection_exists(collection):
            raise FileNotFoundError(f"Qdrant collection {collection} does not exist")
        self.client = client
        self.collection = collection
        self.version = version
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
            )
            found.update(str((r.payload or {})["article_id"]) for r in records)
            if offset is None:
                return found

    def unavailable(self) -> AbstractSet[str]:
        return self._unavailable

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
        values = as_floats(vector)
        response = self.client.query_points(
            self.collection,
            query=(
                qm.NearestQuery(
                    nearest=values,
                    mmr=qm.Mmr(diversity=mmr.server_diversity, candidates_limit=mmr.candidates),
                )
                if mmr is not None
                else values
            ),
            query_filter=build_filter(rules),
            limit=k,
            with_payload=True,
            with_vectors=with_vectors,
            search_params=None
            if self._local
            else qm.SearchParams(hnsw_ef=beam or self.beams.for_rules(rules), exact=self._exact),
        )
        return [
            ScoredItem.from_point(p.score, p.payload, p.vector if with_vectors else None)
            for p in response.points
        ]

    def _records(self, article_ids: Sequence[str], with_vectors: bool) -> list[qm.Record]:
        return self.client.retrieve(
            self.collection,
            ids=[item_point_id(a) for a in article_ids],
            with_payload=True,
            with_vectors=with_vectors,
        )

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
        """The client is shared by the process; nothing to release per version."""


def _is_local(client: QdrantClient) -> bool:
    return client.init_options.get("location") == LOCAL_MODE


class QdrantServerBackend:
    """Model versions as collections `<prefix>_<version>`; the alias `<prefix>` is live."""

    def __init__(self, client: QdrantClient, prefix: str) -> None:
        self.client = client
        self.alias = prefix

    def collection(self, version: str) -> str:
        return f"{self.alias}_{version}"

    def writer(self, version: str, dim: int) -> ServerIndexWriter:
        return ServerIndexWriter(self.client, self.collection(version), dim)

    def open(self, version: str, beams: Beams | None = None) -> ServerItemIndex:
        return ServerItemIndex(self.client, self.collection(version), version, beams=beams)

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
