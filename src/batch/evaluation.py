"""`recsys evaluate`: the models and baselines judged on a split, the EMA replay, the
diversity sweep and the weak-signal replay put together, and the tables that report them.
The split and the metrics are the core's (recsys.ranking)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
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
from batch.update_replay import (
    EMA_SCALE,
    FoldIn,
    ReplayResult,
    choose_update,
    fold_in_grid,
    latest_times,
    replay,
)
from batch.weak_signals import load_weak_signals
from recsys.fold_in import gram
from recsys.model_store import TrialRecord
from recsys.ranking.metrics import AlignedFactors, RankingMetrics, evaluate_ranking
from recsys.ranking.report import Report
from recsys.ranking.split import PreparedSplit, RankingTask, SplitSummary, prepare_split
from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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
