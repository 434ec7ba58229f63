"""Pick the item-index backend from the settings."""

from __future__ import annotations

from recsys.index.base import IndexWriter, ItemIndex
from recsys.index.edge import EdgeIndexWriter, EdgeItemIndex, remove_stale_copies
from recsys.model_store import shard_dir
from recsys.settings import Settings


class IndexConfigError(RuntimeError):
    pass


def _require_embedded(settings: Settings) -> None:
    if settings.qdrant_url:
        raise IndexConfigError(
            "RECSYS_QDRANT_URL is set, but this build serves from the embedded Qdrant Edge "
            "engine only; unset it"
        )


def open_writer(settings: Settings, version: str, dim: int) -> IndexWriter:
    _require_embedded(settings)
    return EdgeIndexWriter(shard_dir(settings.models_dir, version), dim)


def open_index(settings: Settings, version: str) -> ItemIndex:
    _require_embedded(settings)
    work_dir = settings.data_dir / "serving"
    remove_stale_copies(work_dir)
    return EdgeItemIndex(version, shard_dir(settings.models_dir, version), work_dir)
