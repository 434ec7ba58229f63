"""`recsys evaluate`: the models and baselines judged on a split, the EMA replay, the
diversity sweep and the weak-signal replay put together, and the tables that report them.
The split and the metrics are the core's (recsys.ranking)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from pydantic import Field
from rich.console import Console
from rich.table import Table

from batch.baselines import weight_matrix
from batch.diversity_eval import DiversityPoint, diversity_sweep
from batch.eval_config import EvalConfig
from batch.evaluation_data import EventsSummary, describe_events, detect_source, load_events
from batch.implicit_trainer import per_mean_weight
from batch.model_specs import HALF_LIFE, Chosen, ModelSpec, Reweighted, default_models, fit_chosen
from batch.param_search import Values
from batch.signal_replay import SignalReplayResult, signal_replay
from batch.weak_signals import load_weak_signals
from recsys.ema import ema_update
from recsys.fold_in import Recency, event_ages, fold_in, gram
from recsys.model_store import TrialRecord
from recsys.ranking.metrics import (
    AlignedFactors,
    RankingMetrics,
    evaluate_ranking,
    runs,
)
from recsys.ranking.report import Report
from recsys.ranking.split import (
    BoolArray,
    IntArray,
    PreparedSplit,
    RankingTask,
    SplitSummary,
    prepare_split,
)
from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


EMA_SCALE = "u <- (1-a)*u + a*v*|u|/|v| (recsys.ema.ema_update: the item rescaled to the user norm)"


class RateHitRate(Report):
    rate: float
    hit_rate: float


class FoldInHitRate(Report):
    half_life_events: float  # recsys.fold_in.Recency: 0 weighs no item by recency
    step: float  # 0: no step toward the event's item
    hit_rate: float

    @property
    def name(self) -> str:
        return Recency(self.half_life_events, self.step).name


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
    fold_in_hit_rate: float | None = None  # recsys.fold_in after each event (implicit only)
    # Every fold-in variant replayed (the plain one above among them), by its recency.
    fold_in: list[FoldInHitRate] = Field(default_factory=list)
    # The update chosen on the validation split's replay ("ema 0.3", "fold-in"), and its
    # hit rate here; None when this replay is the validation's own.
    chosen: str | None = None
    chosen_hit_rate: float | None = None
    lift: float | None  # chosen (else the best update) / static; None when static is 0
    seconds: float

    def variants(self) -> dict[str, float]:
        """Each online update's hit rate by name: "ema <rate>", "fold-in" and fold-in's
        recency forms ("fold-in h8 step0.2": RECSYS_FOLD_IN_HALF_LIFE_EVENTS=8,
        RECSYS_FOLD_IN_STEP=0.2)."""
        rates = {f"ema {e.rate:g}": e.hit_rate for e in self.ema}
        if self.fold_in_hit_rate is not None:
            rates["fold-in"] = self.fold_in_hit_rate
        rates.update((f.name, f.hit_rate) for f in self.fold_in)
        return rates


class ModelResult(Report):
    name: str
    note: str
    pipeline: bool  # the stack's own pipeline (else a baseline)
    chosen: Values  # by the search on the validation task ({}: nothing to choose)
    trials: list[TrialRecord]  # best first
    search_seconds: float
    test: RankingMetrics
    replay: ReplayResult | None
    validation_replay: ReplayResult | None = None  # where the online update was chosen
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
    hits: IntArray  # static first, then one per EMA rate, then one per fold-in variant
    events: int = 0
    repeats: int = 0
    unknown: int = 0


@dataclass(frozen=True)
class FoldIn:
    """What fold-in needs beside the vectors: the trainer's regularisation and alpha, the
    Gram matrix of the item vectors, each user's train weights and when each train item
    was last bought; and the forms of fold-in to replay (the plain one first)."""

    regularization: float
    alpha: float
    item_gram: npt.NDArray[np.float64]
    weights: sp.csr_matrix  # task users x items
    regularization_exponent: float = 0.0
    # Task users x items, as weights: unix seconds of the pair's latest train event
    # (None: all one time, so recency weighs every train item alike).
    latest: sp.csr_matrix | None = None
    variants: tuple[Recency, ...] = (Recency(),)


def latest_times(task: RankingTask) -> sp.csr_matrix:
    """Unix seconds of each train (user, item)'s latest event, at the events' own
    resolution (a day on H&M-schema data, as the batch writes the Redis history)."""
    events = task.train_events
    if events is None:
        raise ValueError("this task holds no train events")
    seconds = events["ts"].to_numpy().astype("datetime64[s]").astype(np.int64)
    pairs = pd.DataFrame(
        {"u": events["customer_id"].to_numpy(), "i": events["article_id"].to_numpy(), "t": seconds}
    )
    latest = pairs.groupby(["u", "i"], sort=False)["t"].max().reset_index()
    rows = pd.Index(task.user_ids).get_indexer(pd.Index(latest["u"]))
    cols = pd.Index(task.item_ids).get_indexer(pd.Index(latest["i"]))
    shape = (len(task.user_ids), len(task.item_ids))
    return sp.csr_matrix((latest["t"].to_numpy(dtype=np.float64), (rows, cols)), shape=shape)


def fold_in_grid(half_lives: Sequence[float], steps: Sequence[float]) -> tuple[Recency, ...]:
    """The plain fold-in, then every (half-life, step) pair of the grid."""
    grid = [Recency(h, s) for h in half_lives for s in steps]
    return (Recency(), *(r for r in dict.fromkeys(grid) if r != Recency()))


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


class _History:
    """A user's items, confidences and latest times for fold-in: train's, then each
    replayed purchase (one more unit of weight on its item, and newer than every event
    before it: the live updater's events carry their own times)."""

    def __init__(self, folding: FoldIn, user: int) -> None:
        row = folding.weights[user]
        self.weight = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        self.time = dict.fromkeys(self.weight, 0.0)
        if folding.latest is not None:
            times = folding.latest[user]
            self.time.update(zip(times.indices.tolist(), times.data.tolist(), strict=True))
        self.clock = max(self.time.values(), default=0.0)
        self.newest = -1

    def add(self, item: int) -> None:
        self.weight[item] = self.weight.get(item, 0.0) + 1.0
        self.clock += 1.0
        self.time[item] = self.clock
        self.newest = item

    def vectors(self, model: AlignedFactors, folding: FoldIn) -> list[npt.NDArray[np.float32]]:
        """One vector per variant of folding, as recsys.fold_in.FoldInModel computes it:
        the newest item (the event just replayed) is age 0, and the step goes toward it."""
        items = np.fromiter(self.weight, dtype=np.int64, count=len(self.weight))
        base = folding.alpha * np.fromiter(self.weight.values(), dtype=np.float64)
        times = np.fromiter(self.time.values(), dtype=np.float64, count=len(self.time))
        newest = int(np.flatnonzero(items == self.newest)[0]) if self.newest >= 0 else None
        ages = event_ages(times, newest)
        vectors, solved = model.items[items], {}
        out = []
        for recency in folding.variants:
            half_life = recency.half_life_events
            if half_life not in solved:  # the steps share their half-life's solve
                solved[half_life] = fold_in(folding.item_gram, vectors,
                                            base * recency.weights(ages), folding.regularization,
                                            folding.regularization_exponent)  # fmt: skip
            x = solved[half_life]
            if newest is not None:
                x = recency.stepped(x, vectors[newest], model.default_norm)
            out.append(x)
        return out


def _replay_user(
    model: AlignedFactors,
    task: RankingTask,
    user: int,
    items: IntArray,
    rates: Sequence[float],
    counts: _ReplayCounts,
    k: int,
    folding: FoldIn | None,
) -> None:
    mask = _user_mask(model, task.seen, user)
    n_folded = len(folding.variants) if folding is not None else 0
    n_vectors = 1 + len(rates) + n_folded
    vectors = np.repeat(model.users[user][None, :], n_vectors, axis=0)
    history = _History(folding, user) if folding is not None else None
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
        if history is not None and folding is not None:
            history.add(int(item))
            vectors[n_vectors - n_folded :] = history.vectors(model, folding)


def replay(
    model: AlignedFactors,
    task: RankingTask,
    rates: Sequence[float],
    k: int,
    folding: FoldIn | None = None,
    chosen: str | None = None,
) -> ReplayResult:
    """Next-event HitRate@k over the held-out events in time order: static, EMA-updated
    at each rate, and (with `folding`) folded in after each event in each of its forms;
    `chosen` names the update chosen on validation, whose lift is reported."""
    started = time.perf_counter()
    judged = model.has_user[task.replay_users]
    users, items = task.replay_users[judged], task.replay_items[judged]
    folded = folding.variants if folding is not None else ()
    counts = _ReplayCounts(hits=np.zeros(1 + len(rates) + len(folded), dtype=np.int64))
    for start, stop in runs(users):
        user = int(users[start])
        _replay_user(model, task, user, items[start:stop], rates, counts, k, folding)
    rate_of = counts.hits / max(1, counts.events)
    ema_rates = rate_of[1 : 1 + len(rates)]
    best = int(np.argmax(ema_rates)) if rates else -1
    static = float(rate_of[0])
    fold_rates = [
        FoldInHitRate(half_life_events=r.half_life_events, step=r.step, hit_rate=float(h))
        for r, h in zip(folded, rate_of[1 + len(rates) :], strict=True)
    ]
    plain = [f.hit_rate for f in fold_rates if f.name == Recency().name]
    result = ReplayResult(
        events=counts.events,
        users=len(np.unique(users)),
        repeat_events=counts.repeats,
        unknown_item_events=counts.unknown,
        static_hit_rate=static,
        ema=[RateHitRate(rate=r, hit_rate=float(h)) for r, h in zip(rates, ema_rates, strict=True)],
        best_rate=float(rates[best]) if rates else 0.0,
        best_hit_rate=float(ema_rates[best]) if rates else static,
        fold_in_hit_rate=plain[0] if plain else None,
        fold_in=fold_rates,
        lift=None,
        seconds=time.perf_counter() - started,
    )
    variants = result.variants()
    chosen_rate = variants[chosen] if chosen is not None else max(variants.values(), default=static)
    return result.model_copy(
        update={
            "chosen": chosen,
            "chosen_hit_rate": chosen_rate if chosen is not None else None,
            "lift": chosen_rate / static if static > 0 else None,
        }
    )


def choose_update(validation: ReplayResult) -> str:
    """The online update with the best hit rate on the validation replay."""
    variants = validation.variants()
    return max(variants, key=lambda name: variants[name])


def evaluate_model(spec: ModelSpec, split: PreparedSplit[EvalConfig]) -> ModelResult:
    """The spec's choice on validation, judged on test (and by replay)."""
    started = time.perf_counter()
    config = split.config
    chosen = fit_chosen(spec, split)
    found, model, test = chosen.search, chosen.model, chosen.task
    factors = model if isinstance(model, AlignedFactors) else None
    with_replay = spec.replay and factors is not None
    replays = _replays(spec, split, chosen) if with_replay else None
    return ModelResult(
        name=spec.name,
        note=spec.note,
        pipeline=spec.pipeline,
        chosen=found.chosen,
        trials=found.trials if spec.space else [],
        search_seconds=found.seconds if spec.space else 0.0,
        test=evaluate_ranking(model, test, config.k),
        replay=replays[1] if replays else None,
        validation_replay=replays[0] if replays else None,
        diversity=(
            diversity_sweep(
                factors,
                test,
                config.k,
                config.diversity_lambdas,
                config.diversity_users,
                config.seed,
            )
            if with_replay and factors is not None and config.diversity_lambdas
            else None
        ),
        fit_seconds=chosen.fit_seconds,
        seconds=time.perf_counter() - started,
    )


def _folding(
    spec: ModelSpec, values: Values, model: AlignedFactors, task: RankingTask, config: EvalConfig
) -> FoldIn | None:
    if spec.fold_in is None:
        return None
    regularization, alpha, exponent = spec.fold_in(values)
    weights = weight_matrix(task)  # the fit's matrix: its alpha per mean weight, as fitted
    return FoldIn(
        regularization,
        per_mean_weight(alpha, weights),
        gram(model.items),
        weights,
        exponent,
        latest=latest_times(task),
        variants=fold_in_grid(config.fold_in_half_lives, config.fold_in_steps),
    )


def _replays(
    spec: ModelSpec, split: PreparedSplit[EvalConfig], chosen: Chosen
) -> tuple[ReplayResult, ReplayResult] | None:
    """The replay on validation (the model fitted on its train with the chosen values),
    which chooses the online update, then on test with that choice."""
    config, values = split.config, chosen.search.chosen
    task = Reweighted(split.validation)(values)
    model, test_model = spec.fit(values, task), chosen.model
    if not isinstance(model, AlignedFactors) or not isinstance(test_model, AlignedFactors):
        return None
    folding = _folding(spec, values, model, task, config)
    on_validation = replay(model, task, config.ema_rates, config.k, folding)
    update = choose_update(on_validation) if on_validation.variants() else None
    test_folding = _folding(spec, values, test_model, chosen.task, config)
    on_test = replay(test_model, chosen.task, config.ema_rates, config.k, test_folding, update)
    return on_validation, on_test


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
    specs = list(models if models is not None else default_models(Settings()))
    results = [evaluate_model(spec, split) for spec in specs]
    weak = None
    pipeline = [
        (m, r) for m, r in zip(specs, results, strict=True) if m.pipeline and m.make_trainer
    ]
    if signals is not None and pipeline:
        spec, result = pipeline[0]
        half_life = result.chosen.get(HALF_LIFE, split.config.interaction_half_life_days)
        weak = signal_replay(
            events,
            signals,
            spec.name,
            spec.make_trainer,  # type: ignore[arg-type]
            result.chosen,
            replace(split.config, interaction_half_life_days=half_life or None),
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


def _params_text(values: Values) -> str:
    short = {k.removeprefix("implicit_").removeprefix("spark_als_"): v for k, v in values.items()}
    return ", ".join(f"{k}={v:.3g}" for k, v in short.items()) or "-"


def _ranking_table(result: EvaluationResult) -> Table:
    k = result.split.k
    table = Table(title=f"Ranking on test (@{k})")
    columns = ("model", "chosen on validation", "trials", f"NDCG@{k}", f"MAP@{k}", f"Recall@{k}",
               "coverage", "s")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    for m in result.models:
        t = m.test
        table.add_row(
            f"[bold]{m.name}[/] (pipeline)" if m.pipeline else m.name,
            _params_text(m.chosen) + (f" ({m.note})" if m.note else ""),
            str(len(m.trials)) if m.trials else "-",
            f"{t.ndcg:.4f}",
            f"{t.map:.4f}",
            f"{t.recall:.4f}",
            f"{t.coverage:.3f}",
            f"{m.seconds:.1f}",
        )
    return table


def _replay_table(result: EvaluationResult) -> Table | None:
    replays = [
        (f"{m.name} ({split})", r)
        for m in result.models
        for split, r in (("validation", m.validation_replay), ("test", m.replay))
        if r is not None
    ]
    if not replays:
        return None
    rates = [r.rate for r in replays[0][1].ema]
    folded = any(r.fold_in_hit_rate is not None for _, r in replays)
    recent = any(len(r.fold_in) > 1 for _, r in replays)
    table = Table(title=f"Replay: next-event HitRate@{result.split.k}")
    columns = ["model", "events", "static", *(f"a={r:g}" for r in rates)]
    columns += [*(["fold-in"] if folded else []), *(["best recency fold-in"] if recent else [])]
    for column in [*columns, "chosen on validation", "lift"]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, r in replays:
        table.add_row(
            name,
            str(r.events),
            f"{r.static_hit_rate:.4f}",
            *(f"{e.hit_rate:.4f}" for e in r.ema),
            *([_rate(r.fold_in_hit_rate)] if folded else []),
            *([_best_recency(r)] if recent else []),
            r.chosen or "-",
            f"{r.lift:.2f}x" if r.lift is not None and r.chosen else "-",
        )
    return table


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _best_recency(replayed: ReplayResult) -> str:
    forms = [f for f in replayed.fold_in if f.half_life_events > 0 or f.step > 0]
    if not forms:
        return "-"
    best = max(forms, key=lambda f: f.hit_rate)
    return f"{best.hit_rate:.4f} ({best.name.removeprefix('fold-in ')})"


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


def pipeline_and_best_baseline(
    result: EvaluationResult,
) -> tuple[ModelResult, ModelResult] | None:
    """The pipeline and the baseline with the best test NDCG, when there are both."""
    pipeline = [m for m in result.models if m.pipeline]
    others = [m for m in result.models if not m.pipeline]
    if not pipeline or not others:
        return None
    return pipeline[0], max(others, key=lambda m: m.test.ndcg)


def _against_table(pipeline: ModelResult, best: ModelResult, k: int) -> Table:
    table = Table(title="The pipeline against the best baseline (test)")
    for column in ("", f"NDCG@{k}", f"MAP@{k}", f"Recall@{k}", "coverage"):
        table.add_column(column, justify="right" if column else "left")
    for label, m in (
        (f"pipeline: {pipeline.name}", pipeline),
        (f"best baseline: {best.name}", best),
    ):
        t = m.test
        table.add_row(
            label, f"{t.ndcg:.4f}", f"{t.map:.4f}", f"{t.recall:.4f}", f"{t.coverage:.3f}"
        )
    ratios = [
        pipeline.test.ndcg / best.test.ndcg if best.test.ndcg else None,
        pipeline.test.map / best.test.map if best.test.map else None,
        pipeline.test.recall / best.test.recall if best.test.recall else None,
        pipeline.test.coverage / best.test.coverage if best.test.coverage else None,
    ]
    table.add_row("ratio", *("-" if r is None else f"{r:.2f}x" for r in ratios))
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
    against = pipeline_and_best_baseline(result)
    if against is not None:
        console.print(_against_table(*against, result.split.k))
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
