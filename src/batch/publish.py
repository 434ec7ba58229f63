"""Make a trained model servable: index shard, Redis vectors and history, then go live.

The live-version pointer moves last, so a reader never sees a half-written version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from recsys.availability import AVAILABLE_FIELD
from recsys.ids import item_point_id
from recsys.index.base import (
    COLLABORATIVE,
    PLACED_BY_FIELD,
    IndexBackend,
    IndexedItem,
    IndexWriter,
    ItemFilter,
)
from recsys.index.beams import GROUP_FIELD, IndexCalibration, calibrate_beams
from recsys.trainer import Factors

Advance = Callable[[int], None]
CHUNK = 5_000


def _chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def write_index(
    writer: IndexWriter,
    factors: Factors,
    metadata: pd.DataFrame,
    advance: Advance,
    placed_by: npt.NDArray[np.object_] | None = None,
    unavailable: AbstractSet[str] = frozenset(),
) -> None:
    """metadata is indexed by article_id and holds the payload fields; placed_by says per
    item row how it got its vector (batch.content_vectors; all collaborative when None);
    every item is `available` unless it is in `unavailable` (recsys.availability)."""
    check_point_ids([str(a) for a in factors.item_ids])
    meta = metadata.reindex(factors.item_ids).fillna("")
    meta[PLACED_BY_FIELD] = list(placed_by) if placed_by is not None else COLLABORATIVE
    meta[AVAILABLE_FIELD] = [str(a) not in unavailable for a in factors.item_ids]
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in meta.to_dict("records")
    ]
    for part in _chunks(len(factors.item_ids), 2_000):
        writer.upsert(
            [
                IndexedItem(str(aid), vec, payload)
                for aid, vec, payload in zip(
                    factors.item_ids[part], factors.item_factors[part], records[part], strict=True
                )
            ]
        )
        advance(part.stop - part.start)
    writer.finish()


def calibrate_index(
    backend: IndexBackend,
    version: str,
    factors: Factors,
    metadata: pd.DataFrame,
    unavailable: AbstractSet[str],
    target: float,
) -> IndexCalibration:
    """The beams the version's queries need for `target` recall, measured on its built
    index with its own customers' vectors (recsys.index.beams)."""
    index = backend.open(version)

    def search(vector: npt.NDArray[np.float32], rules: ItemFilter, beam: int) -> list[str]:
        return [hit.article_id for hit in index.search(vector, 10, rules, beam=beam)]

    try:
        groups = metadata.reindex(factors.item_ids)[GROUP_FIELD].fillna("").astype(str)
        return calibrate_beams(
            search,
            factors.item_ids,
            factors.item_factors,
            list(groups),
            unavailable,
            factors.user_factors,
            target,
        )
    finally:
        index.close()


class PointIdCollisionError(RuntimeError):
    """Two article ids hash to one point id of the index."""


def check_point_ids(article_ids: list[str]) -> None:
    seen: dict[int, str] = {}
    for article_id in article_ids:
        other = seen.setdefault(item_point_id(article_id), article_id)
        if other != article_id:
            raise PointIdCollisionError(
                f"articles {other!r} and {article_id!r} hash to the same index point id; "
                "rename one of them"
            )
