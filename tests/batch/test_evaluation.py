"""The offline evaluation's runners: rankings whose answer is known (the baselines
included), the search's choice, the replay on a taste switch, and the published figures
on ml-100k (the split and the metrics themselves: tests/recsys/test_ranking.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from batch.baselines import (
    PopularityTrainer,
    ease_share,
    fit_ease,
    fit_item_knn,
    weight_matrix,
)
from batch.eval_config import EvalConfig
from batch.evaluation import (
    EvaluationResult,
    evaluate_events,
    evaluate_model,
    pipeline_and_best_baseline,
    print_results,
)
from batch.evaluation_data import describe_events, load_events
from batch.generate import generate
from batch.implicit_trainer import ImplicitTrainer
from batch.model_specs import ModelSpec, default_models
from batch.update_replay import (
    FoldIn,
    ReplayResult,
    choose_update,
    fold_in_grid,
    latest_times,
    replay,
)
from ranking_cases import DAY, events_frame, random_events
from recsys.fold_in import gram
from recsys.ranking.metrics import (
    align,
    evaluate_ranking,
    recommend,
)
from recsys.ranking.split import RankingTask, Split, build_task, prepare_split, temporal_split
from recsys.settings import Settings
from recsys.trainer import Factors

ML_100K = Path(__file__).parents[3] / "shared/datasets/ml-100k"

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def task_of(train: list[tuple[str, str, int]], test: list[tuple[str, str, int]]) -> RankingTask:
    return build_task(Split(events_frame(train), events_frame(test)), EvalConfig())


# ---------------------------------------------------------------- rankings with a known answer


def test_popularity_ranks_by_train_counts_and_masks_the_users_items() -> None:
    counts = {"a": 4, "b": 3, "c": 2, "d": 1}  # user k bought the items bought by >= k users
    train = [(f"u{k}", item, 0) for item, n in counts.items() for k in range(1, n + 1)]
    task = task_of(train, [("u3", "c", 1), ("u4", "b", 1)])
    model = align(PopularityTrainer().fit(task.interactions), task)
    items = list(task.item_ids)
    users = np.arange(len(task.user_ids))
    ranked = [[items[i] for i in row if i >= 0] for row in recommend(model, task.seen, users, 3)]
    assert ranked == [[], ["d"], ["c", "d"], ["b", "c", "d"]]
    metrics = evaluate_ranking(model, task, k=10)
    assert metrics.users == 2 and metrics.ndcg == pytest.approx(1.0)


def checkerboard() -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """Two taste groups; each user bought every item of their group but one, held out."""
    train, test = [], []
    for g in range(2):
        items = [f"g{g}-i{j}" for j in range(8)]
        for u in range(16):
            held = items[u % len(items)]
            train += [(f"g{g}-u{u}", item, 0) for item in items if item != held]
            test.append((f"g{g}-u{u}", held, 1))
    return train, test


def test_als_ranks_the_held_out_item_of_the_users_group_in_top_3() -> None:
    task = task_of(*checkerboard())
    trainer = ImplicitTrainer.from_params(
        {"factors": 4, "regularization": 0.01, "alpha": 1.0, "iterations": 15}
    )
    metrics = evaluate_ranking(align(trainer.fit(task.interactions), task), task, k=3)
    assert metrics.users == 32
    assert metrics.recall == pytest.approx(1.0)


@pytest.mark.parametrize("fit", [lambda t: fit_item_knn(t, 8), lambda t: fit_ease(t, 1.0)])
def test_item_knn_and_ease_rank_the_held_out_item_of_the_users_group_in_top_3(fit: Any) -> None:
    task = task_of(*checkerboard())
    metrics = evaluate_ranking(fit(task), task, k=3)
    assert metrics.users == 32
    assert metrics.recall == pytest.approx(1.0)


def test_ease_keeps_the_most_bought_items_and_scores_no_other() -> None:
    counts = {"a": 6, "b": 5, "c": 4, "d": 2, "e": 1}
    train = [(f"u{k}", item, 0) for item, n in counts.items() for k in range(n)]
    task = task_of(train, [("u0", "d", 1)])
    model = fit_ease(task, 1.0, max_items=3)
    assert [task.item_ids[i] for i in np.flatnonzero(model.has_item)] == ["a", "b", "c"]
    assert ease_share(task, 3) == pytest.approx(15 / 18)
    top = recommend(model, task.seen, np.arange(len(task.user_ids)), 5)
    assert set(top[top >= 0].tolist()) <= {0, 1, 2}


def test_the_search_chooses_the_values_with_the_best_validation_ndcg() -> None:
    class Reversed(PopularityTrainer):
        def fit(self, interactions: pd.DataFrame, progress: Any = None) -> Factors:
            factors = super().fit(interactions)
            return Factors(
                user_ids=factors.user_ids,
                item_ids=factors.item_ids,
                user_factors=-factors.user_factors,
                item_factors=factors.item_factors,
                params={"trainer": "reversed"},
                train_seconds=0.0,
            )

    spec = ModelSpec(
        "choice",
        {"popular": (0.0, 1.0)},
        make_trainer=lambda values: PopularityTrainer() if values["popular"] else Reversed(),
    )
    prepared = prepare_split(random_events(seed=5), EvalConfig(diversity_lambdas=()))
    result = evaluate_model(spec, prepared)
    assert result.chosen == {"popular": 1.0}
    assert [t.params for t in result.trials] == [{"popular": 1.0}, {"popular": 0.0}]
    assert result.trials[0].validation_ndcg > result.trials[1].validation_ndcg
    assert result.replay is None


def test_a_searched_half_life_reweights_the_interactions() -> None:
    seen: list[float] = []

    def trainer(values: dict[str, float]) -> PopularityTrainer:
        return PopularityTrainer()

    class Recording(ModelSpec):
        def fit(self, values: dict[str, float], task: RankingTask) -> Any:
            seen.append(float(task.interactions["weight"].max()))
            return super().fit(values, task)

    spec = Recording("decay", {"interaction_half_life_days": (0.0, 1.0)}, make_trainer=trainer)
    prepared = prepare_split(random_events(seed=5), EvalConfig(diversity_lambdas=()))
    evaluate_model(spec, prepared)
    # Undecayed weights count days (>= 1); a 1-day half-life shrinks all but the newest.
    assert max(seen[:2]) >= 1.0 and min(seen[:2]) < max(seen[:2])


# ---------------------------------------------------------------- replay


def switching_tastes() -> tuple[RankingTask, Factors]:
    """Users bought group A items in train and only group B items afterwards."""
    group_a, group_b = [f"a{j}" for j in range(30)], [f"b{j}" for j in range(12)]
    train, test = [], []
    for u in range(10):
        train += [(f"u{u}", group_a[(u + j) % 30], j) for j in range(10)]
        test += [(f"u{u}", group_b[(3 * u + j) % 12], 20 + j) for j in range(6)]
    # Fans make every item known to train, so the catalogue holds both groups whole.
    train += [
        (f"{g}-fan", item, 0) for g, group in (("a", group_a), ("b", group_b)) for item in group
    ]
    test.append(("u0", "a0", 40))  # a repeat: masked, so a miss for every variant
    task = task_of(train, test)
    rng = np.random.default_rng(0)
    is_b = np.array([i.startswith("b") for i in task.item_ids])
    items = np.where(is_b[:, None], [0.0, 1.0], [1.0, 0.0]) + rng.normal(0, 0.05, (len(is_b), 2))
    factors = Factors(
        user_ids=task.user_ids,
        item_ids=task.item_ids,
        user_factors=np.tile(np.float32([1.0, 0.0]), (len(task.user_ids), 1)),
        item_factors=items.astype(np.float32),
        params={},
        train_seconds=0.0,
    )
    return task, factors


def test_replay_ema_beats_static_when_tastes_switch() -> None:
    task, factors = switching_tastes()
    result = replay(align(factors, task), task, rates=(0.1, 0.5), k=10)
    assert result.events == 61 and result.users == 10 and result.repeat_events == 1
    assert result.static_hit_rate == 0.0  # 20 unseen A items fill the static top 10
    assert result.best_hit_rate > 0.5
    assert result.best_rate == 0.5
    assert result.ema[1].hit_rate > result.ema[0].hit_rate >= result.static_hit_rate


def test_fold_in_replays_beside_the_ema_and_the_validation_choice_sets_the_lift() -> None:
    task, factors = switching_tastes()
    model = align(factors, task)
    folding = FoldIn(
        regularization=0.1, alpha=1.0, item_gram=gram(model.items), weights=weight_matrix(task)
    )
    result = replay(model, task, rates=(0.1, 0.5), k=10, folding=folding, chosen="fold-in")
    assert result.fold_in_hit_rate is not None
    assert result.fold_in_hit_rate > result.static_hit_rate
    assert result.chosen == "fold-in" and result.chosen_hit_rate == result.fold_in_hit_rate
    assert result.lift is None  # static is 0
    assert set(result.variants()) == {"ema 0.1", "ema 0.5", "fold-in"}
    assert choose_update(result) == max(result.variants(), key=result.variants().__getitem__)


def test_recency_fold_in_weighs_the_latest_purchases_and_the_choice_covers_its_forms() -> None:
    task, factors = switching_tastes()
    model = align(factors, task)
    folding = FoldIn(
        regularization=0.1,
        alpha=1.0,
        item_gram=gram(model.items),
        weights=weight_matrix(task),
        latest=latest_times(task),
        variants=fold_in_grid((2.0,), (0.0, 0.5)),
    )
    result = replay(model, task, rates=(0.1, 0.5), k=10, folding=folding)
    rates = result.variants()
    assert set(rates) == {"ema 0.1", "ema 0.5", "fold-in", "fold-in h2", "fold-in h2 step0.5"}
    assert rates["fold-in"] == result.fold_in_hit_rate
    # The new group B purchases outweigh the ten old A ones once recency weighs them, and
    # the step toward the item just bought adds to it: here past the best EMA.
    assert rates["fold-in h2 step0.5"] > rates["fold-in h2"] > rates["fold-in"] + 0.3
    assert choose_update(result) == "fold-in h2 step0.5"
    on_test = replay(model, task, (0.1, 0.5), 10, folding, chosen=choose_update(result))
    assert on_test.chosen_hit_rate == rates["fold-in h2 step0.5"]
    assert ReplayResult.model_validate_json(on_test.to_json()) == on_test
    # Each user's train items carry the time of their latest event, as the history does.
    u0 = list(task.user_ids).index("u0")
    latest = latest_times(task)[u0]
    days = sorted(latest.data.tolist())
    assert len(days) == 10 and days[-1] - days[0] == 9 * 86_400


# ---------------------------------------------------------------- loading


def test_load_events_reads_movielens_and_hm_folders(tmp_path: Path, spark: SparkSession) -> None:
    movielens = tmp_path / "ml"
    movielens.mkdir()
    (movielens / "ratings.tsv").write_text(
        "user_id\titem_id\trating\ttimestamp\n1\t10\t5\t881250949\n2\t10\t1\t881250950\n"
    )
    events = load_events(movielens)
    assert events["customer_id"].tolist() == ["1", "2"]
    assert events["weight"].tolist() == [1.0, 1.0] and events["weight"].dtype == np.float32
    assert events["ts"].iloc[0] == pd.Timestamp(881250949, unit="s")
    summary = describe_events(events)
    assert (summary.users, summary.items, summary.events) == (2, 1, 2)

    generate(tmp_path / "hm", customers=40, articles=30, transactions=300, seed=1)
    with pytest.raises(ValueError, match="needs a Spark session"):
        load_events(tmp_path / "hm")
    hm = load_events(tmp_path / "hm", spark)  # through the batch's own cleaning job
    assert len(hm) > 250 and str(hm["ts"].dtype) == "datetime64[ns]"

    with pytest.raises(ValueError, match="not an evaluation data folder"):
        load_events(tmp_path)


# ---------------------------------------------------------------- ml-100k, fixed config


@pytest.mark.skipif(not ML_100K.is_dir(), reason=f"ml-100k not found at {ML_100K}")
def test_ml_100k_als_beats_popularity_and_ema_beats_static() -> None:
    fixed = {"factors": 32, "regularization": 0.1, "alpha": 1.0, "iterations": 15}
    models = [
        ModelSpec("popularity", make_trainer=lambda _values: PopularityTrainer()),
        ModelSpec(
            "implicit",
            make_trainer=lambda _values: ImplicitTrainer.from_params(fixed),
            pipeline=True,
            replay=True,
        ),
    ]
    result = evaluate_events(load_events(ML_100K), models)
    popularity, als = result.models
    assert als.test.ndcg > popularity.test.ndcg + 0.03, (als.test, popularity.test)
    assert als.replay is not None
    assert als.replay.best_hit_rate > 1.3 * als.replay.static_hit_rate, als.replay
    assert result.split.test_events == 20_000 and result.split.test_users == 943

    assert EvaluationResult.model_validate_json(result.to_json()) == result
    assert json.loads(result.to_json())["split"]["description"].startswith("per-user temporal")
    console = Console(record=True, width=160)
    print_results(result, console)
    assert "NDCG@10" in console.export_text()


def test_default_models_are_the_pipeline_and_the_baselines_reported_side_by_side() -> None:
    settings = Settings(tuning_max_trials=3)
    specs = default_models(settings, None)
    assert [(m.name, m.pipeline) for m in specs] == [
        ("implicit", True),
        ("popularity", False),
        ("implicit ALS", False),
        ("item-kNN", False),
        ("EASE", False),
    ]  # fmt: skip; Spark's ALS joins with a session
    fixed = default_models(settings, None, half_life=30.0)[0]
    assert fixed.space["interaction_half_life_days"] == (30.0,)
    config = EvalConfig(diversity_lambdas=(), search_max_trials=3, search_budget_s=60)
    result = evaluate_events(random_events(seed=3), specs, config)
    pipeline, best = pipeline_and_best_baseline(result) or (None, None)
    assert pipeline is not None and pipeline.name == "implicit" and len(pipeline.trials) == 3
    # The pipeline's replay tries fold-in's recency forms beside the EMA and chooses among
    # them all on validation.
    assert pipeline.validation_replay is not None and pipeline.replay is not None
    tried = pipeline.validation_replay.variants()
    assert {"fold-in", "fold-in h8", "fold-in h8 step0.2", "fold-in h16 step0.2"} <= set(tried)
    assert pipeline.replay.chosen == max(tried, key=tried.__getitem__)
    assert best is not None and best.test.ndcg == max(m.test.ndcg for m in result.models[1:])
    console = Console(record=True, width=200)
    print_results(result, console)
    text = console.export_text()
    assert "against the best baseline" in text and "EASE" in text and "item-kNN" in text


@pytest.mark.skipif(not ML_100K.is_dir(), reason=f"ml-100k not found at {ML_100K}")
def test_ml_100k_baselines_beat_popularity_and_the_pipeline_keeps_up_with_them() -> None:
    # The batch's default trials: the space has six dimensions, and twelve trials leave
    # TPE still sampling at random.
    settings = Settings()
    config = EvalConfig(diversity_lambdas=(), ema_rates=(0.3,), fold_in_half_lives=())
    result = evaluate_events(load_events(ML_100K), default_models(settings), config)
    by_name = {m.name: m.test.ndcg for m in result.models}
    assert all(
        ndcg > by_name["popularity"] + 0.04
        for ndcg in by_name.values()
        if ndcg != by_name["popularity"]
    ), by_name
    assert by_name["EASE"] > 0.2, by_name
    assert by_name["implicit"] > 0.95 * max(by_name.values()), by_name


# ---------------------------------------------------------------- weak signals


def test_signals_split_at_each_users_online_window() -> None:
    from batch.signal_replay import _cut

    purchases = events_frame([("u", "a", d) for d in range(10)])
    outer = temporal_split(purchases, 0.2, 5)  # test from day 8
    inner = temporal_split(outer.train, 0.2, 5)  # online window from day 6
    signals = events_frame([("u", "s", d) for d in (2, 6, 7, 8, 9)] + [("other", "s", 9)])
    train, online = _cut(signals.assign(event_type="view"), inner.test, outer.test)
    days = (DAY + pd.to_timedelta([2, 6, 7], unit="D")).tolist()
    assert train["ts"].tolist() == [days[0], DAY + pd.Timedelta(days=9)]  # u's and other's
    assert train["customer_id"].tolist() == ["u", "other"]
    assert online["ts"].tolist() == days[1:]  # the test day and after: unused


def test_choosing_weights_prefers_the_lightest_within_the_margin() -> None:
    from batch.signal_replay import SignalPoint, choose

    def point(kind: str, weight: float, ndcg: float) -> SignalPoint:
        weights = {"view": 0.0, "click": 0.0, "add_to_cart": 0.0, kind: weight}
        return SignalPoint(variant=kind, weights=weights, ndcg=0.0, recall=0.0,
                           retrained_ndcg=ndcg, retrained_recall=0.0)  # fmt: skip

    points = [
        point("view", 0.1, 0.110), point("view", 0.5, 0.1195), point("view", 1.0, 0.1200),
        point("click", 0.5, 0.1005), point("click", 1.0, 0.0900),  # no real gain: off
        point("add_to_cart", 0.2, 0.120), point("add_to_cart", 1.0, 0.140),
    ]  # fmt: skip
    assert choose(points, purchases_only=0.100, min_gain=0.01) == {
        "view": 0.5, "click": 0.0, "add_to_cart": 1.0
    }  # fmt: skip


def test_weak_signals_replay_on_small_generated_data(tmp_path: Path) -> None:
    from batch.weak_signals import SIGNAL_TYPES, load_weak_signals

    generate(tmp_path, customers=400, articles=200, transactions=8_000, seed=2, weak_signals=True)
    tx = pd.read_csv(tmp_path / "transactions_train.csv", dtype=str)
    events = pd.DataFrame(
        {
            "customer_id": tx["customer_id"],
            "article_id": tx["article_id"],
            "ts": pd.to_datetime(tx["t_dat"]),
            "weight": np.ones(len(tx), dtype=np.float32),
        }
    )
    signals = load_weak_signals(tmp_path)
    fixed = {"factors": 16, "regularization": 1.0, "alpha": 20.0, "iterations": 8}
    config = EvalConfig(
        interaction_half_life_days=90.0, signal_weights=(0.2, 1.0), diversity_lambdas=()
    )
    models = [
        ModelSpec(
            "implicit",
            make_trainer=lambda _values: ImplicitTrainer.from_params(fixed),
            pipeline=True,
        )
    ]
    result = evaluate_events(events, models, config, signals=signals)
    weak = result.signals
    assert weak is not None and weak.model == "implicit"
    assert [p.variant for p in weak.points] == [
        "static", "purchases only", "view", "view", "click", "click",
        "add_to_cart", "add_to_cart", "all x0.25", "all x0.5", "all x1",
    ]  # fmt: skip
    by_variant = {p.variant: p for p in weak.points}
    only = by_variant["purchases only"]
    assert only.retrained_ndcg == only.ndcg  # no signal trains when every weight is 0
    assert weak.users > 50 and weak.online_purchases > 0
    assert all(weak.online_signals[t] > 0 and weak.train_signals[t] > 0 for t in SIGNAL_TYPES)
    assert set(weak.chosen) == set(SIGNAL_TYPES)
    allowed = {0.0} | {round(w * s, 4) for w in (0.2, 1.0) for s in (0.25, 0.5, 1.0)}
    assert set(weak.chosen.values()) <= allowed
    # On this data, where signals follow taste, they help: trained and updated with them.
    best = max(p.retrained_ndcg or 0.0 for p in weak.points)
    assert best > only.ndcg, weak.points

    assert EvaluationResult.model_validate_json(result.to_json()) == result
    console = Console(record=True, width=160)
    print_results(result, console)
    text = console.export_text()
    assert "Weak signals" in text and "Chosen weak-signal weights" in text
