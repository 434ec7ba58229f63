"""Pick the item-index backend from the settings: a Qdrant server when
RECSYS_QDRANT_URL is set, else the embedded Qdrant Edge engine."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from recsys.index.base import Beams, IndexBackend, IndexWriter, ItemIndex
from recsys.index.edge import EdgeIndexWriter, EdgeItemIndex, remove_stale_copies
from recsys.model_layout import shard_dir
from recsys.settings import Settings

if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient


class EdgeBackend:
    """Each version is a shard folder in the model directory; serving copies it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def writer(self, version: str, dim: int) -> IndexWriter:
        return EdgeIndexWriter(shard_dir(self.settings.models_dir, version), dim)

    def open(self, version: str, beams: Beams | None = None) -> ItemIndex:
        work_dir = self.settings.data_dir / "serving"
        remove_stale_copies(work_dir)
        return EdgeItemIndex(
            version, shard_dir(self.settings.models_dir, version), work_dir, beams=beams
        )

    def publish(self, version: str) -> None:
        """Serving follows the live-version pointer; there is nothing to move here."""

    def drop(self, version: str) -> None:
        shutil.rmtree(shard_dir(self.settings.models_dir, version), ignore_errors=True)


def open_backend(settings: Settings, *, reads: AsyncQdrantClient | None = None) -> IndexBackend:
    """`reads` (from `open_reads`): the async client the versions a serving process opens
    read through on the event loop; the embedded engine needs none."""
    if settings.qdrant_url:
        from recsys.index.qdrant_server import Cluster, QdrantServerBackend, client_for

        return QdrantServerBackend(
            client_for(settings),
            settings.qdrant_collection,
            cluster=Cluster.of(settings),
            reads=reads,
        )
    return EdgeBackend(settings)


def open_reads(settings: Settings) -> AsyncQdrantClient | None:
    """A serving process's async client of the Qdrant server (close it when done); None
    for the embedded engine, which answers in-process."""
    if settings.qdrant_url:
        from recsys.index.qdrant_server import async_client_for

        return async_client_for(settings)
    return None
