"""What every offline evaluation stands on: the temporal split, the ranking task, the
metrics (NDCG, MAP, Recall@k, coverage), a model's vectors aligned to the task, and the
grid search on the validation split. The batch's holdout and gate use it; the runners
(batch.evaluation, batch.signal_replay, batch.diversity_eval, batch.cold_start_eval)
stand on it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel

from batch.interactions import build_interactions
from batch.trainer import Factors, ImplicitTrainer, Trainer

if TYPE_CHECKING:
    pass


IntArray = npt.NDArray[np.int64]


BoolArray = npt.NDArray[np.bool_]


FloatArray = npt.NDArray[np.float64]


Params = dict[str, Any]


EMA_RATES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)


# Weights of a view, click or add-to-cart (a purchase is 1) the weak-signal replay tries.
SIGNAL_WEIGHTS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)


IMPLICIT_GRID: list[Params] = [
    {"factors": f, "regularization": r, "alpha": a, "iterations": 15}
    for f, r, a in itertools.product((32, 64), (0.01, 0.1, 1.0), (1.0, 5.0, 20.0))
]


# Rows of users scored at once: bounds the dense score block to ~64 MB whatever the catalogue.
SCORE_CELLS = 1 << 24
# The MMR trade-offs the diversity sweep measures (batch.diversity_eval).
LAMBDAS: tuple[float, ...] = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10
    test_fraction: float = 0.2
    min_user_events: int = 5
    ema_rates: tuple[float, ...] = EMA_RATES
    max_test_users: int | None = None  # a seeded sample keeps huge data sets tractable
    diversity_lambdas: tuple[float, ...] = LAMBDAS  # MMR trade-offs to measure ((): none)
    diversity_users: int = 1_000  # test users queried through the engine per lambda
    interaction_half_life_days: float | None = None  # as RECSYS_INTERACTION_HALF_LIFE_DAYS
    seed: int = 0
    # The weak-signal replay (batch.signal_replay), where the data has weak signals.
    signal_weights: tuple[float, ...] = SIGNAL_WEIGHTS
    signal_ema_rate: float = 0.3  # as RECSYS_EMA_RATE
    signal_min_gain: float = 0.01  # relative NDCG@k over purchases only to turn a type on
    signal_retrain: bool = True  # also train ALS with the weak signals (one fit per weight)

    def describe_split(self) -> str:
        return (
            f"per-user temporal, last {self.test_fraction:.0%} of each user's events are test "
            f"(users with fewer than {self.min_user_events} events stay in train); all items "
            "not in the user's train set ranked; hyperparameters chosen on a validation split "
            "carved the same way from train; interaction weights "
            + (
                f"decay by half every {self.interaction_half_life_days:g} days"
                if self.interaction_half_life_days
                else "do not decay"
            )
        )


class _Result(BaseModel):
    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


class RankingMetrics(_Result):
    ndcg: float
    map: float
    recall: float
    coverage: float
    users: int
    users_without_vector: int


class GridPoint(_Result):
    params: Params
    validation_ndcg: float
    fit_seconds: float


class SplitSummary(_Result):
    description: str
    k: int
    users: int
    test_users: int
    items: int
    train_events: int
    test_events: int
    train_interactions: int
    test_events_unknown_item: int  # item absent from train: a miss that stays in the denominator
    test_pairs_seen_in_train: int  # held-out item the user already had: masked, so a miss
    validation_train_events: int
    validation_test_events: int
    validation_test_users: int


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def temporal_split(events: pd.DataFrame, test_fraction: float, min_user_events: int) -> Split:
    """Each user's last `test_fraction` of events (at least one) are test; ties keep file order.

    Both halves come out sorted by user, then time, then original order.
    """
    ordered = events.assign(_order=np.arange(len(events))).sort_values(
        ["customer_id", "ts", "_order"], kind="stable"
    )
    by_user = ordered.groupby("customer_id", sort=False)
    position = by_user.cumcount().to_numpy()
    size = by_user["ts"].transform("size").to_numpy()
    n_test = np.maximum(1, np.floor(size * test_fraction + 0.5)).astype(np.int64)
    is_test = (size >= min_user_events) & (position >= size - n_test)
    ordered = ordered.drop(columns="_order")
    return Split(
        train=ordered[~is_test].reset_index(drop=True),
        test=ordered[is_test].reset_index(drop=True),
    )


def to_interactions(events: pd.DataFrame, half_life_days: float | None = None) -> pd.DataFrame:
    """One row per (user, item); weight = distinct events (timestamps), time-decayed when
    half_life_days is set, exactly as the batch builds them."""
    interactions = build_interactions(events.rename(columns={"ts": "t_dat"}), half_life_days)
    return interactions[["customer_id", "article_id", "weight"]].reset_index(drop=True)


@dataclass(frozen=True)
class RankingTask:
    """Train interactions for the trainers and, in dense indexes, what the model is judged on."""

    interactions: pd.DataFrame
    user_ids: npt.NDArray[np.object_]  # every user with train events, sorted
    item_ids: npt.NDArray[np.object_]  # the catalogue: every train item, sorted
    seen: sp.csr_matrix  # user x item: train interactions, masked when ranking
    test_users: IntArray  # rows of user_ids that are judged
    relevant: sp.csr_matrix  # test user x item: held-out items that are in the catalogue
    n_relevant: IntArray  # distinct held-out items per test user, unknown ones included
    replay_users: IntArray  # one per held-out event, grouped by user, time order inside
    replay_items: IntArray  # the event's item; -1 when not in the catalogue
    test_events_unknown_item: int
    test_pairs_seen_in_train: int


def binary_csr(rows: IntArray, cols: IntArray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _pick_users(candidates: IntArray, config: EvalConfig) -> IntArray:
    if config.max_test_users is None or len(candidates) <= config.max_test_users:
        return candidates
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(candidates, size=config.max_test_users, replace=False))


def build_task(split: Split, config: EvalConfig) -> RankingTask:
    interactions = to_interactions(split.train, config.interaction_half_life_days)
    users = pd.Index(np.sort(interactions["customer_id"].unique()))
    items = pd.Index(np.sort(interactions["article_id"].unique()))
    seen = binary_csr(
        users.get_indexer(interactions["customer_id"]).astype(np.int64),
        items.get_indexer(interactions["article_id"]).astype(np.int64),
        (len(users), len(items)),
    )
    event_users = users.get_indexer(split.test["customer_id"]).astype(np.int64)
    test_users = _pick_users(np.unique(event_users[event_users >= 0]), config)
    keep = np.isin(event_users, test_users)
    event_users = event_users[keep]
    event_items = items.get_indexer(split.test["article_id"][keep]).astype(np.int64)
    rows = np.searchsorted(test_users, event_users)
    pairs = pd.DataFrame({"row": rows, "item": split.test["article_id"][keep].to_numpy()})
    n_relevant = pairs.drop_duplicates().groupby("row").size()
    known = event_items >= 0
    # Stable, so each user's events keep their time order from the split.
    grouped = np.argsort(event_users, kind="stable")
    return RankingTask(
        interactions=interactions,
        user_ids=np.asarray(users, dtype=object),
        item_ids=np.asarray(items, dtype=object),
        seen=seen,
        test_users=test_users,
        relevant=binary_csr(rows[known], event_items[known], (len(test_users), len(items))),
        n_relevant=np.asarray(
            n_relevant.reindex(range(len(test_users)), fill_value=0), dtype=np.int64
        ),
        replay_users=event_users[grouped],
        replay_items=event_items[grouped],
        test_events_unknown_item=int((~known).sum()),
        test_pairs_seen_in_train=pairs_seen(seen, event_users[known], event_items[known]),
    )


def pairs_seen(seen: sp.csr_matrix, users: IntArray, items: IntArray) -> int:
    """Distinct (user, item) pairs among these that `seen` holds."""
    pairs = np.unique(np.stack([users, items]), axis=1)
    return int(np.asarray(seen[pairs[0], pairs[1]]).sum()) if pairs.size else 0


@dataclass(frozen=True)
class PreparedSplit:
    """The test task (train vs test) and the validation task (carved from train only)."""

    test: RankingTask
    validation: RankingTask
    config: EvalConfig
    summary: SplitSummary


def prepare_split(events: pd.DataFrame, config: EvalConfig | None = None) -> PreparedSplit:
    config = config or EvalConfig()
    outer = temporal_split(events, config.test_fraction, config.min_user_events)
    inner = temporal_split(outer.train, config.test_fraction, config.min_user_events)
    test, validation = build_task(outer, config), build_task(inner, config)
    summary = SplitSummary(
        description=config.describe_split(),
        k=config.k,
        users=len(test.user_ids),
        test_users=len(test.test_users),
        items=len(test.item_ids),
        train_events=len(outer.train),
        test_events=len(outer.test),
        train_interactions=len(test.interactions),
        test_events_unknown_item=test.test_events_unknown_item,
        test_pairs_seen_in_train=test.test_pairs_seen_in_train,
        validation_train_events=len(inner.train),
        validation_test_events=len(inner.test),
        validation_test_users=len(validation.test_users),
    )
    return PreparedSplit(test=test, validation=validation, config=config, summary=summary)


@dataclass(frozen=True)
class AlignedFactors:
    """A model's vectors re-indexed to the task's users and items; zero rows where it has none."""

    users: npt.NDArray[np.float32]
    items: npt.NDArray[np.float32]
    has_user: BoolArray
    has_item: BoolArray
    default_norm: float  # the model's median user norm, for users with no vector


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


def recommend(model: AlignedFactors, seen: sp.csr_matrix, users: IntArray, k: int) -> IntArray:
    """Top k by dot product for the given user rows; seen rows are those users' masks."""
    scores = model.users[users] @ model.items.T
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


def evaluate_ranking(model: AlignedFactors, task: RankingTask, k: int) -> RankingMetrics:
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


def make_implicit_trainer(params: Params) -> Trainer:
    return ImplicitTrainer(
        factors=int(params["factors"]),
        iterations=int(params.get("iterations", 15)),
        regularization=float(params["regularization"]),
        alpha=float(params["alpha"]),
        seed=int(params.get("seed", 0)),
    )


def search_grid(
    make_trainer: Callable[[Params], Trainer], grid: list[Params], task: RankingTask, k: int
) -> list[GridPoint]:
    points = []
    for params in grid:
        factors = make_trainer(params).fit(task.interactions)
        metrics = evaluate_ranking(align(factors, task), task, k)
        points.append(
            GridPoint(
                params=params, validation_ndcg=metrics.ndcg, fit_seconds=factors.train_seconds
            )
        )
    return points
