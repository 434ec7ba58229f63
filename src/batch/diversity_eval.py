"""What MMR costs and buys: the test users' top k through the serving engine's own MMR
(Qdrant Edge, exact search) at several diversity_lambda values, scored for accuracy
(NDCG@k, Recall@k), intra-list diversity and catalogue coverage. It sets the API's
default diversity_lambda (docs/evaluation.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from batch.eval_config import LAMBDAS
from recsys.diversity import intra_list_diversity, mmr_for
from recsys.index.base import IndexedItem, ItemFilter, Mmr
from recsys.index.edge import EdgeIndexWriter, EdgeItemIndex
from recsys.ranking.metrics import AlignedFactors, ndcg_at_k, recall_at_k
from recsys.ranking.split import RankingTask


class DiversityPoint(BaseModel):
    diversity_lambda: float
    ndcg: float
    recall: float
    intra_list_diversity: float  # 1 - mean pairwise cosine of a list, averaged over users
    coverage: float
    users: int


def _shard(model: AlignedFactors, task: RankingTask, folder: Path) -> EdgeItemIndex:
    writer = EdgeIndexWriter(folder / "shard", model.items.shape[1])
    rows = np.flatnonzero(model.has_item)
    for start in range(0, len(rows), 2_000):
        part = rows[start : start + 2_000]
        writer.upsert([IndexedItem(str(task.item_ids[r]), model.items[r], {}) for r in part])
    writer.finish()
    return EdgeItemIndex("eval", folder / "shard", folder / "serving", exact=True)


def diversity_sweep(
    model: AlignedFactors,
    task: RankingTask,
    k: int,
    lambdas: tuple[float, ...] = LAMBDAS,
    max_users: int = 1_000,
    seed: int = 0,
) -> list[DiversityPoint]:
    """The same users at every lambda; what they had in train is excluded, as in serving."""

    judged = np.flatnonzero(model.has_user[task.test_users])
    if len(judged) > max_users:
        judged = np.sort(np.random.default_rng(seed).choice(judged, max_users, replace=False))
    row_of = {str(a): i for i, a in enumerate(task.item_ids)}
    points = []
    with tempfile.TemporaryDirectory(prefix="recsys-mmr-") as tmp:
        index = _shard(model, task, Path(tmp))
        try:
            for relevance in lambdas:
                mmr: Mmr | None = mmr_for(k, relevance)
                hits = np.zeros((len(judged), k), dtype=bool)
                diversities: list[float] = []
                shown: set[str] = set()
                for n, position in enumerate(judged):
                    user = int(task.test_users[position])
                    seen = task.seen.indices[task.seen.indptr[user] : task.seen.indptr[user + 1]]
                    rules = ItemFilter(exclude_ids=[str(task.item_ids[i]) for i in seen])
                    found = index.search(model.users[user], k, rules, mmr=mmr, with_vectors=True)
                    relevant = task.relevant[position]
                    for rank, item in enumerate(found):
                        hits[n, rank] = relevant[0, row_of[item.article_id]] > 0
                        shown.add(item.article_id)
                    ild = intra_list_diversity([i.vector for i in found if i.vector is not None])
                    if ild is not None:
                        diversities.append(ild)
                n_relevant = task.n_relevant[judged]
                points.append(
                    DiversityPoint(
                        diversity_lambda=relevance,
                        ndcg=float(ndcg_at_k(hits, n_relevant, k).mean()) if len(judged) else 0.0,
                        recall=float(recall_at_k(hits, n_relevant, k).mean())
                        if len(judged)
                        else 0.0,
                        intra_list_diversity=float(np.mean(diversities)) if diversities else 0.0,
                        coverage=len(shown) / max(1, len(task.item_ids)),
                        users=len(judged),
                    )
                )
        finally:
            index.close()
    return points
