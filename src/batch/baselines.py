"""The reference models `recsys evaluate` puts beside the pipeline: popularity, item-kNN
(implicit's BM25 item-item neighbours) and EASE (Steck, 2019: a closed-form item-item
regression). Each is judged on the same task as the ALS trainers, through the same
metrics (recsys.ranking.metrics.Scorer)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from recsys.ranking.split import BoolArray, IntArray, RankingTask
from recsys.trainer import Factors, Progress, TrainingData, as_pandas

# EASE inverts a dense item x item matrix: 4 bytes x items^2 twice over in float32 (the
# Gram matrix and its inverse), and items^3 work. At 10,000 items that is 0.8 GB and a
# half minute on two cores; H&M's 105,542 articles would need 44.6 GB per matrix. Past
# this many items EASE keeps the most bought ones, and the others get no score.
EASE_MAX_ITEMS = 10_000


class PopularityTrainer:
    """Every user gets the same scores, the item's train interaction count: a rank-1 model."""

    name = "popularity"

    def fit(self, data: TrainingData, progress: Progress | None = None) -> Factors:
        started = time.perf_counter()
        interactions = as_pandas(data)
        counts = interactions.groupby("article_id", sort=True)["weight"].sum()
        users = np.sort(interactions["customer_id"].unique())
        return Factors(
            user_ids=np.asarray(users, dtype=object),
            item_ids=np.asarray(counts.index, dtype=object),
            user_factors=np.ones((len(users), 1), dtype=np.float32),
            item_factors=counts.to_numpy(dtype=np.float32)[:, None],
            params={"trainer": self.name},
            train_seconds=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class ItemItemModel:
    """Scores as a user's train weights times an item x item matrix, over `columns` (the
    task's item indexes the matrix covers; the others cannot be recommended)."""

    history: sp.csr_matrix  # task users x columns: train interaction weights
    similarity: sp.csr_matrix | npt.NDArray[np.float32]  # columns x columns
    columns: IntArray
    has_user: BoolArray
    has_item: BoolArray

    def scores(self, users: IntArray) -> npt.NDArray[np.float32]:
        block = self.history[users] @ self.similarity
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        out = np.zeros((len(users), len(self.has_item)), dtype=np.float32)
        out[:, self.columns] = dense
        return out


def weight_matrix(task: RankingTask) -> sp.csr_matrix:
    """The task's train interactions as a users x items matrix of weights."""
    interactions = task.interactions
    rows = pd.Index(task.user_ids).get_indexer(pd.Index(interactions["customer_id"]))
    cols = pd.Index(task.item_ids).get_indexer(pd.Index(interactions["article_id"]))
    weights = interactions["weight"].to_numpy(dtype=np.float32)
    shape = (len(task.user_ids), len(task.item_ids))
    return sp.csr_matrix((weights, (rows, cols)), shape=shape)


def _model(
    history: sp.csr_matrix,
    similarity: sp.csr_matrix | npt.NDArray[np.float32],
    columns: IntArray,
    n_items: int,
) -> ItemItemModel:
    has_item = np.zeros(n_items, dtype=bool)
    has_item[columns] = True
    return ItemItemModel(
        history=history,
        similarity=similarity,
        columns=columns,
        has_user=np.diff(history.indptr) > 0,
        has_item=has_item,
    )


def fit_item_knn(task: RankingTask, neighbours: int) -> ItemItemModel:
    """implicit's BM25 item-item model: each item's `neighbours` most similar items."""
    from implicit.nearest_neighbours import BM25Recommender

    weights = weight_matrix(task)
    knn = BM25Recommender(K=neighbours, num_threads=0)
    with warnings.catch_warnings():  # its own BM25 step hands its kNN a COO matrix
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        knn.fit(weights, show_progress=False)
    similarity = sp.csr_matrix(knn.similarity, dtype=np.float32)
    return _model(weights, similarity, np.arange(len(task.item_ids)), len(task.item_ids))


def fit_ease(task: RankingTask, l2: float, max_items: int = EASE_MAX_ITEMS) -> ItemItemModel:
    """EASE over the `max_items` items most users bought: B = I - P / diag(P), where
    P = (X'X + l2 I)^-1 and B's diagonal is 0."""
    weights = weight_matrix(task)
    buyers = np.diff(weights.tocsc().indptr)
    columns = np.sort(np.argsort(-buyers, kind="stable")[:max_items])
    history = weights[:, columns].tocsr()
    gram = (history.T @ history).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    similarity = (-inverse / np.diag(inverse)).astype(np.float32)
    similarity[np.diag_indices_from(similarity)] = 0.0
    return _model(history, similarity, columns.astype(np.int64), len(task.item_ids))


def ease_share(task: RankingTask, max_items: int = EASE_MAX_ITEMS) -> float:
    """The share of the task's train interactions on the items EASE keeps."""
    buyers = task.interactions.groupby("article_id").size().to_numpy()
    if len(buyers) <= max_items:
        return 1.0
    return float(np.sort(buyers)[::-1][:max_items].sum() / buyers.sum())
