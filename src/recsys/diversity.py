"""Diversity, as serving applies it and as the evaluation measures it: how big a pool MMR
picks from, and how diverse a list came out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recsys.index.base import Mmr

# MMR picks from the nearest max(MMR_MIN_POOL, MMR_POOL_PER_ITEM * k) items: at k = 50
# that is 250, so diversity changes the list even at the largest k.
MMR_MIN_POOL = 100
MMR_POOL_PER_ITEM = 5


def mmr_for(k: int, diversity_lambda: float) -> Mmr | None:
    """None at 1.0: pure relevance is the plain nearest-neighbour query."""
    if diversity_lambda >= 1.0:
        return None
    return Mmr(relevance=diversity_lambda, candidates=max(MMR_MIN_POOL, MMR_POOL_PER_ITEM * k))


def intra_list_diversity(vectors: list[npt.NDArray[np.float32]]) -> float | None:
    """1 - mean pairwise cosine of a result list (None below two items)."""
    if len(vectors) < 2:
        return None
    unit = unit_rows(np.stack(vectors).astype(np.float32))
    sims = unit @ unit.T
    n = len(vectors)
    mean = (float(sims.sum()) - float(np.trace(sims))) / (n * (n - 1))
    return 1.0 - mean


def unit_rows(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)
