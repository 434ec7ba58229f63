"""Offline evaluation: a per-user temporal split, top-k ranking metrics for any `Trainer`, and a
time-ordered replay that measures what online (EMA) updates of the user vector add."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from batch.diversity_eval import LAMBDAS, DiversityPoint, diversity_sweep
from batch.evaluation_data import EventsSummary, describe_events, detect_source, load_events
from batch.interactions import build_interactions
from batch.trainer import Factors, ImplicitTrainer, Progress, Trainer, TrainingData, as_pandas
from batch.weak_signals import load_weak_signals
from recsys.ema import ema_update

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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
EMA_SCALE = "u <- (1-a)*u + a*v*|u|/|v| (recsys.ema.ema_update: the item rescaled to the user norm)"
# Rows of users scored at once: bounds the dense score block to ~64 MB whatever the catalogue.
SCORE_CELLS = 1 << 24


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


# ---------------------------------------------------------------- results


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


class RateHitRate(_Result):
    rate: float
    hit_rate: float


class ReplayResult(_Result):
    update: str = EMA_SCALE
    events: int
    users: int
    repeat_events: int  # the item was already the user's: masked, so a miss for every variant
    unknown_item_events: int  # the model has no vector for the item: a miss, u unchanged
    static_hit_rate: float
    ema: list[RateHitRate]
    best_rate: float
    best_hit_rate: float
    lift: float | None  # best / static; None when static is 0
    seconds: float


class SignalPoint(_Result):
    """One way of using the weak signals: NDCG/Recall@k of the online-updated vectors."""

    variant: str  # static, purchases only, view, click, add_to_cart, all x<scale>
    weights: dict[str, float]  # per event type; a purchase is always 1
    ndcg: float  # ALS trained on purchases, updated online by every event
    recall: float
    retrained_ndcg: float | None = None  # ALS trained with the signals too, then the same
    retrained_recall: float | None = None


class SignalReplayResult(_Result):
    model: str
    description: str
    ema_rate: float
    users: int  # test users judged
    online_purchases: int  # purchases replayed in the online window (judged users)
    online_signals: dict[str, int]  # weak signals in the online window, by type
    train_signals: dict[str, int]  # weak signals before the cutoff (retrained variants)
    points: list[SignalPoint]
    chosen: dict[str, float]
    seconds: float


class ModelResult(_Result):
    name: str
    params: Params
    grid: list[GridPoint]
    test: RankingMetrics
    replay: ReplayResult | None
    diversity: list[DiversityPoint] | None = None
    fit_seconds: float
    seconds: float


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


class EvaluationResult(_Result):
    data_dir: str | None
    source: str | None
    data: EventsSummary
    split: SplitSummary
    models: list[ModelResult]
    signals: SignalReplayResult | None = None  # with a weak-signals file
    seconds: float


# ---------------------------------------------------------------- split


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


# ---------------------------------------------------------------- the task a model is judged on


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


# ---------------------------------------------------------------- models in the task's indexes


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


# ---------------------------------------------------------------- metrics


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


# ---------------------------------------------------------------- ranking


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


# ---------------------------------------------------------------- replay


@dataclass
class _ReplayCounts:
    hits: IntArray  # static first, then one per EMA rate
    events: int = 0
    repeats: int = 0
    unknown: int = 0


def _user_mask(model: AlignedFactors, seen: sp.csr_matrix, user: int) -> BoolArray:
    """Items that cannot be recommended to the user: seen in train or without a vector."""
    mask = ~model.has_item
    mask[seen.indices[seen.indptr[user] : seen.indptr[user + 1]]] = True
    return mask


def _hits_now(
    model: AlignedFactors, vectors: npt.NDArray[np.float32], mask: BoolArray, item: int, k: int
) -> IntArray:
    """1 per vector whose top k (masked) holds the item: fewer than k items score above it."""
    scores = model.items @ vectors.T
    target = scores[item].copy()
    scores[mask] = -np.inf
    hits: IntArray = ((scores > target).sum(axis=0) < k).astype(np.int64)
    return hits


def _replay_user(
    model: AlignedFactors,
    task: RankingTask,
    user: int,
    items: IntArray,
    rates: Sequence[float],
    counts: _ReplayCounts,
    k: int,
) -> None:
    mask = _user_mask(model, task.seen, user)
    vectors = np.repeat(model.users[user][None, :], 1 + len(rates), axis=0)
    for item in items:
        counts.events += 1
        if item < 0 or not model.has_item[item]:
            counts.unknown += 1
            continue
        if mask[item]:
            counts.repeats += 1
        else:
            counts.hits += _hits_now(model, vectors, mask, int(item), k)
        mask[item] = True
        for row, rate in enumerate(rates, start=1):
            vectors[row] = ema_update(vectors[row], model.items[item], rate, model.default_norm)


def runs(users: IntArray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive values."""
    if len(users) == 0:
        return
    bounds = np.flatnonzero(np.diff(users)) + 1
    yield from zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(users)].tolist(), strict=True)


def replay(
    model: AlignedFactors, task: RankingTask, rates: Sequence[float], k: int
) -> ReplayResult:
    """Next-event HitRate@k over the held-out events in time order, static vs EMA-updated."""
    started = time.perf_counter()
    judged = model.has_user[task.replay_users]
    users, items = task.replay_users[judged], task.replay_items[judged]
    counts = _ReplayCounts(hits=np.zeros(1 + len(rates), dtype=np.int64))
    for start, stop in runs(users):
        _replay_user(model, task, int(users[start]), items[start:stop], rates, counts, k)
    rate_of = counts.hits / max(1, counts.events)
    best = int(np.argmax(rate_of[1:])) + 1 if rates else 0
    static = float(rate_of[0])
    return ReplayResult(
        events=counts.events,
        users=len(np.unique(users)),
        repeat_events=counts.repeats,
        unknown_item_events=counts.unknown,
        static_hit_rate=static,
        ema=[
            RateHitRate(rate=r, hit_rate=float(h)) for r, h in zip(rates, rate_of[1:], strict=True)
        ],
        best_rate=float(rates[best - 1]) if rates else 0.0,
        best_hit_rate=float(rate_of[best]),
        lift=float(rate_of[best]) / static if static > 0 else None,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- trainers and the grid


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


def make_implicit_trainer(params: Params) -> Trainer:
    return ImplicitTrainer(
        factors=int(params["factors"]),
        iterations=int(params.get("iterations", 15)),
        regularization=float(params["regularization"]),
        alpha=float(params["alpha"]),
        seed=int(params.get("seed", 0)),
    )


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: how to build its trainer from one grid point, and its grid."""

    name: str
    make_trainer: Callable[[Params], Trainer]
    grid: list[Params]
    replay: bool = True


def default_models(implicit_grid: list[Params] | None = None) -> list[ModelSpec]:
    return [
        ModelSpec("popularity", lambda _params: PopularityTrainer(), [{}], replay=False),
        ModelSpec("implicit", make_implicit_trainer, implicit_grid or IMPLICIT_GRID),
    ]


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


def evaluate_trainer(
    name: str,
    make_trainer: Callable[[Params], Trainer],
    grid: list[Params],
    split: PreparedSplit,
    *,
    with_replay: bool = True,
) -> ModelResult:
    """Pick the grid point with the best validation NDCG (no search for a single point), refit
    on the full train, and judge it on test (and by replay)."""
    if not grid:
        raise ValueError(f"{name}: empty hyperparameter grid")
    started = time.perf_counter()
    config = split.config
    points = search_grid(make_trainer, grid, split.validation, config.k) if len(grid) > 1 else []
    chosen = max(points, key=lambda p: p.validation_ndcg).params if points else grid[0]
    factors = make_trainer(chosen).fit(split.test.interactions)
    model = align(factors, split.test)
    return ModelResult(
        name=name,
        params=factors.params,
        grid=points,
        test=evaluate_ranking(model, split.test, config.k),
        replay=replay(model, split.test, config.ema_rates, config.k) if with_replay else None,
        diversity=(
            diversity_sweep(
                model,
                split.test,
                config.k,
                config.diversity_lambdas,
                config.diversity_users,
                config.seed,
            )
            if with_replay and config.diversity_lambdas
            else None
        ),
        fit_seconds=factors.train_seconds,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- entry points


def evaluate_events(
    events: pd.DataFrame,
    models: Sequence[ModelSpec] | None = None,
    config: EvalConfig | None = None,
    *,
    data_dir: Path | None = None,
    source: str | None = None,
    signals: pd.DataFrame | None = None,
) -> EvaluationResult:
    """`signals` (batch.weak_signals' frame): views, clicks and add-to-carts to replay
    with the `implicit` model as chosen (batch.signal_replay)."""
    # Imported here: the signal replay is built from this module's pieces.
    from batch.signal_replay import signal_replay

    started = time.perf_counter()
    split = prepare_split(events, config)
    specs = list(models if models is not None else default_models())
    results = [
        evaluate_trainer(m.name, m.make_trainer, m.grid, split, with_replay=m.replay) for m in specs
    ]
    weak = None
    implicit = [(m, r) for m, r in zip(specs, results, strict=True) if m.name == "implicit"]
    if signals is not None and implicit:
        spec, result = implicit[0]
        weak = signal_replay(
            events, signals, spec.name, spec.make_trainer, result.params, split.config
        )
    return EvaluationResult(
        data_dir=str(data_dir) if data_dir is not None else None,
        source=source,
        data=describe_events(events),
        split=split.summary,
        models=results,
        signals=weak,
        seconds=time.perf_counter() - started,
    )


def run_evaluation(
    data_dir: Path,
    models: Sequence[ModelSpec] | None = None,
    config: EvalConfig | None = None,
    spark: SparkSession | None = None,
) -> EvaluationResult:
    """Load an H&M (with Spark) or MovieLens folder and evaluate the models on it; with a
    weak-signals file (batch.weak_signals) beside the CSVs, replay those too."""
    started = time.perf_counter()
    source = detect_source(data_dir)
    result = evaluate_events(
        load_events(data_dir, spark),
        models,
        config,
        data_dir=data_dir,
        source=source,
        signals=load_weak_signals(data_dir),
    )
    return result.model_copy(update={"seconds": time.perf_counter() - started})


# ---------------------------------------------------------------- display


def _params_text(params: Params) -> str:
    shown = {k: v for k, v in params.items() if k not in ("trainer", "seed")}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def _ranking_table(result: EvaluationResult) -> Table:
    k = result.split.k
    table = Table(title=f"Ranking on test (@{k})")
    for column in ("model", "params", f"NDCG@{k}", f"MAP@{k}", f"Recall@{k}", "coverage", "s"):
        table.add_column(column, justify="left" if column in ("model", "params") else "right")
    for m in result.models:
        t = m.test
        table.add_row(
            m.name,
            _params_text(m.params),
            f"{t.ndcg:.4f}",
            f"{t.map:.4f}",
            f"{t.recall:.4f}",
            f"{t.coverage:.3f}",
            f"{m.seconds:.1f}",
        )
    return table


def _replay_table(result: EvaluationResult) -> Table | None:
    replays = [(m.name, m.replay) for m in result.models if m.replay is not None]
    if not replays:
        return None
    rates = [r.rate for r in replays[0][1].ema]
    table = Table(title=f"Replay: next-event HitRate@{result.split.k}")
    for column in ["model", "events", "static", *(f"a={r:g}" for r in rates), "best", "lift"]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, r in replays:
        lift = f"{r.lift:.2f}x" if r.lift is not None else "-"
        table.add_row(
            name,
            str(r.events),
            f"{r.static_hit_rate:.4f}",
            *(f"{e.hit_rate:.4f}" for e in r.ema),
            f"a={r.best_rate:g}",
            lift,
        )
    return table


def _diversity_table(name: str, points: list[DiversityPoint], k: int) -> Table:
    table = Table(title=f"{name}: MMR through Qdrant Edge ({points[0].users} test users)")
    for column in ("diversity_lambda", f"NDCG@{k}", f"Recall@{k}", "intra-list diversity",
                   "coverage"):  # fmt: skip
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(
            f"{p.diversity_lambda:g}",
            f"{p.ndcg:.4f}",
            f"{p.recall:.4f}",
            f"{p.intra_list_diversity:.3f}",
            f"{p.coverage:.3f}",
        )
    return table


def _signals_table(signals: SignalReplayResult, k: int) -> Table:
    online = ", ".join(f"{n:,} {t}" for t, n in signals.online_signals.items())
    table = Table(
        title=f"Weak signals ({signals.model}, EMA rate {signals.ema_rate:g}, "
        f"{signals.users:,} test users; online window: {signals.online_purchases:,} "
        f"purchases, {online})"
    )
    types = list(signals.chosen)
    for column in ("variant", "/".join(types), f"NDCG@{k}", f"Recall@{k}",
                   f"retrained NDCG@{k}", f"retrained Recall@{k}"):  # fmt: skip
        table.add_column(column, justify="left" if column == "variant" else "right")
    for p in signals.points:
        table.add_row(
            p.variant,
            "/".join(f"{p.weights[t]:g}" for t in types) if p.weights else "-",
            f"{p.ndcg:.4f}",
            f"{p.recall:.4f}",
            "-" if p.retrained_ndcg is None else f"{p.retrained_ndcg:.4f}",
            "-" if p.retrained_recall is None else f"{p.retrained_recall:.4f}",
        )
    return table


def print_results(result: EvaluationResult, console: Console) -> None:
    s, d = result.split, result.data
    console.print(
        f"[bold]{result.source or 'events'}[/] {result.data_dir or ''}: {d.users} users, "
        f"{d.items} items, {d.events} events"
    )
    console.print(f"Split: {s.description}")
    console.print(
        f"train {s.train_events} events ({s.train_interactions} pairs), test {s.test_events} "
        f"events of {s.test_users} users; {s.test_events_unknown_item} test events with items "
        f"unknown to train, {s.test_pairs_seen_in_train} held-out pairs already in train"
    )
    console.print(_ranking_table(result))
    replay_table = _replay_table(result)
    if replay_table is not None:
        console.print(replay_table)
        console.print(f"EMA update: {EMA_SCALE}")
    for m in result.models:
        if m.diversity:
            console.print(_diversity_table(m.name, m.diversity, result.split.k))
    if result.signals is not None:
        console.print(_signals_table(result.signals, result.split.k))
        chosen = ", ".join(f"{t}={w:g}" for t, w in result.signals.chosen.items())
        console.print(f"Chosen weak-signal weights: {chosen} (a purchase is 1)")
    console.print(f"Total {result.seconds:.1f} s")
