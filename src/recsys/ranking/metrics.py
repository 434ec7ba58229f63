"""NDCG, MAP, Recall@k and catalogue coverage of a model on a ranking task: the model's
vectors aligned to the task's users and items, scored in blocks of bounded size."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from recsys.ranking.report import Report
from recsys.ranking.split import BoolArray, FloatArray, IntArray, RankingTask
from recsys.trainer import Factors

# Rows of users scored at once: bounds the dense score block to ~64 MB whatever the catalogue.
SCORE_CELLS = 1 << 24


class RankingMetrics(Report):
    ndcg: float
    map: float
    recall: float
    coverage: float
    users: int
    users_without_vector: int


class Scorer(Protocol):
    """A model judged on a task: scores of the task's items for some of its users."""

    @property
    def has_user(self) -> BoolArray: ...  # users the model can score (has a vector for)

    @property
    def has_item(self) -> BoolArray: ...  # items the model can recommend

    def scores(self, users: IntArray) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class AlignedFactors:
    """A model's vectors re-indexed to the task's users and items; zero rows where it has none."""

    users: npt.NDArray[np.float32]
    items: npt.NDArray[np.float32]
    has_user: BoolArray
    has_item: BoolArray
    default_norm: float  # the model's median user norm, for users with no vector

    def scores(self, users: IntArray) -> npt.NDArray[np.float32]:
        scores: npt.NDArray[np.float32] = self.users[users] @ self.items.T
        return scores


def _rows(ids: npt.NDArray[np.object_], wanted: npt.NDArray[np.object_]) -> IntArray:
    return pd.Index(ids).get_indexer(pd.Index(wanted)).astype(np.int64)


def _take(vectors: npt.NDArray[np.float32], rows: IntArray) -> npt.NDArray[np.float32]:
    out = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
    out[rows >= 0] = vectors[rows[rows >= 0]]
    return out


def align(factors: Factors, task: RankingTask) -> AlignedFactors:
    user_rows = _rows(factors.user_ids, task.user_ids)
    item_rows = _rows(factors.item_ids, task.item_ids)
    norms = np.linalg.norm(factors.user_factors, axis=1)
    return AlignedFactors(
        users=_take(factors.user_factors, user_rows),
        items=_take(factors.item_factors, item_rows),
        has_user=user_rows >= 0,
        has_item=item_rows >= 0,
        default_norm=float(np.median(norms)) if len(norms) else 1.0,
    )


def _discounts(k: int) -> FloatArray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """numerator / denominator, 0 where the denominator is 0 (a user with nothing relevant)."""
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def ndcg_at_k(hits: BoolArray, n_relevant: IntArray, k: int) -> FloatArray:
    """Per user: binary-relevance DCG of the top k over the ideal DCG of min(|relevant|, k)."""
    top = hits[:, :k].astype(np.float64)
    discounts = _discounts(k)
    dcg = top @ discounts[: top.shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_relevant, k)]
    return _ratio(dcg, ideal)


def average_precision_at_k(hits: BoolArray, n_relevant: IntArray, k: int) -> FloatArray:
    """Per user: the sum of precision@i at each hit i, over min(|relevant|, k)."""
    top = hits[:, :k].astype(np.float64)
    precision = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    total = (precision * top).sum(axis=1)
    norm = np.minimum(n_relevant, k).astype(np.float64)
    return _ratio(total, norm)


def recall_at_k(hits: BoolArray, n_relevant: IntArray, k: int) -> FloatArray:
    """Per user: hits in the top k over all distinct relevant items."""
    found = hits[:, :k].sum(axis=1).astype(np.float64)
    norm = n_relevant.astype(np.float64)
    return _ratio(found, norm)


def catalog_coverage(recommended: IntArray, n_items: int) -> float:
    """Distinct recommended items (-1 is padding) over the catalogue."""
    if n_items == 0:
        return 0.0
    return len(np.unique(recommended[recommended >= 0])) / n_items


def top_k(scores: npt.NDArray[np.float32], k: int) -> IntArray:
    """Column indexes of the k best scores per row, best first; -1 where the score is -inf."""
    n_rows, n_cols = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    width = min(k, n_cols)
    if width == 0:
        return out
    part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best[np.isneginf(np.take_along_axis(part_scores, order, axis=1))] = -1
    out[:, :width] = best
    return out


def recommend(model: Scorer, seen: sp.csr_matrix, users: IntArray, k: int) -> IntArray:
    """Top k by score for the given user rows; seen rows are those users' masks."""
    scores = model.scores(users)
    scores[:, ~model.has_item] = -np.inf
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    return top_k(scores, k)


def hit_matrix(recommended: IntArray, relevant: sp.csr_matrix) -> BoolArray:
    dense = relevant.toarray() > 0
    hits: BoolArray = np.take_along_axis(dense, np.maximum(recommended, 0), axis=1)
    return hits & (recommended >= 0)


def row_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def evaluate_ranking(model: Scorer, task: RankingTask, k: int) -> RankingMetrics:
    """NDCG, MAP and recall at k averaged over test users with a vector; catalogue coverage."""
    judged = np.flatnonzero(model.has_user[task.test_users])
    ndcg: list[FloatArray] = []
    ap: list[FloatArray] = []
    recall: list[FloatArray] = []
    recommended = np.zeros(len(task.item_ids), dtype=bool)
    for chunk in row_chunks(len(judged), max(1, SCORE_CELLS // max(1, len(task.item_ids)))):
        positions = judged[chunk]
        users = task.test_users[positions]
        top = recommend(model, task.seen[users], users, k)
        hits = hit_matrix(top, task.relevant[positions])
        n_relevant = task.n_relevant[positions]
        ndcg.append(ndcg_at_k(hits, n_relevant, k))
        ap.append(average_precision_at_k(hits, n_relevant, k))
        recall.append(recall_at_k(hits, n_relevant, k))
        recommended[top[top >= 0]] = True
    return RankingMetrics(
        ndcg=_mean(ndcg),
        map=_mean(ap),
        recall=_mean(recall),
        coverage=catalog_coverage(np.flatnonzero(recommended), len(task.item_ids)),
        users=len(judged),
        users_without_vector=len(task.test_users) - len(judged),
    )


def _mean(parts: list[FloatArray]) -> float:
    return float(np.concatenate(parts).mean()) if parts else 0.0


def runs(users: IntArray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive values."""
    if len(users) == 0:
        return
    bounds = np.flatnonzero(np.diff(users)) + 1
    yield from zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(users)].tolist(), strict=True)
