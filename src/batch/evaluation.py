"""`recsys evaluate`: the models and baselines judged on a split, the EMA replay, the
diversity sweep and the weak-signal replay put together, and the tables that report them.
The split and the metrics are the core's (recsys.ranking)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from batch.diversity_eval import DiversityPoint, diversity_sweep
from batch.eval_config import IMPLICIT_GRID, EvalConfig
from batch.evaluation_data import EventsSummary, describe_events, detect_source, load_events
from batch.implicit_trainer import ImplicitTrainer
from batch.signal_replay import SignalReplayResult, signal_replay
from batch.weak_signals import load_weak_signals
from recsys.ema import ema_update
from recsys.ranking.metrics import AlignedFactors, RankingMetrics, align, evaluate_ranking, runs
from recsys.ranking.report import Report
from recsys.ranking.search import GridPoint, Params, search_grid
from recsys.ranking.split import (
    BoolArray,
    IntArray,
    PreparedSplit,
    RankingTask,
    SplitSummary,
    prepare_split,
)
from recsys.trainer import Factors, Progress, Trainer, TrainingData, as_pandas

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


EMA_SCALE = "u <- (1-a)*u + a*v*|u|/|v| (recsys.ema.ema_update: the item rescaled to the user norm)"


class RateHitRate(Report):
    rate: float
    hit_rate: float


class ReplayResult(Report):
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


class ModelResult(Report):
    name: str
    params: Params
    grid: list[GridPoint]
    test: RankingMetrics
    replay: ReplayResult | None
    diversity: list[DiversityPoint] | None = None
    fit_seconds: float
    seconds: float


class EvaluationResult(Report):
    data_dir: str | None
    source: str | None
    data: EventsSummary
    split: SplitSummary
    models: list[ModelResult]
    signals: SignalReplayResult | None = None  # with a weak-signals file
    seconds: float


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
class ModelSpec:
    """A model to evaluate: how to build its trainer from one grid point, and its grid."""

    name: str
    make_trainer: Callable[[Params], Trainer]
    grid: list[Params]
    replay: bool = True


def default_models(implicit_grid: list[Params] | None = None) -> list[ModelSpec]:
    return [
        ModelSpec("popularity", lambda _params: PopularityTrainer(), [{}], replay=False),
        ModelSpec("implicit", ImplicitTrainer.from_params, implicit_grid or IMPLICIT_GRID),
    ]


def evaluate_trainer(
    name: str,
    make_trainer: Callable[[Params], Trainer],
    grid: list[Params],
    split: PreparedSplit[EvalConfig],
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
    started = time.perf_counter()
    split = prepare_split(events, config or EvalConfig())
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
