"""The H&M competition's protocol (batch.competition): the last week's MAP@12 with a
known answer, both ways of treating the customer's own purchases, the best sellers for
new customers, and a whole run."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from batch.baselines import PopularityTrainer
from batch.competition import (
    CompetitionResult,
    best_sellers,
    competition_map,
    prepare_week_split,
    print_competition,
    run_competition,
    week_split,
)
from batch.eval_config import EvalConfig
from batch.model_specs import ModelSpec, default_models
from batch.tuning import search_space
from ranking_cases import events_frame, random_events
from recsys.ranking.metrics import align
from recsys.settings import Settings


def shop() -> pd.DataFrame:
    """Train to day 14: a bought by 3, b by 2, c by 1 (u1 bought a); the last train week
    (days 8-14) sold c twice and d once. Test week (days 15-21): u1 buys a and b, the
    new customer n1 buys c."""
    rows = [
        ("u1", "a", 1), ("u2", "a", 2), ("u3", "a", 3), ("u2", "b", 4), ("u3", "b", 5),
        ("u4", "c", 9), ("u4", "c", 10), ("u5", "d", 12), ("u5", "e", 1),
        ("u1", "a", 16), ("u1", "b", 18), ("n1", "c", 21),
    ]  # fmt: skip
    return events_frame(rows)


def test_the_week_split_cuts_at_the_last_seven_days() -> None:
    split = week_split(shop())
    assert sorted(split.test["customer_id"]) == ["n1", "u1", "u1"]
    assert split.train["ts"].max() == pd.Timestamp("2020-01-13")  # day 12


def test_map_at_12_with_own_purchases_excluded_and_allowed() -> None:
    events = shop()
    prepared = prepare_week_split(events, EvalConfig(k=12))
    outer = week_split(events)
    task = prepared.test
    sellers = best_sellers(outer, task, 12)
    assert [task.item_ids[i] for i in sellers[:2]] == ["c", "d"]
    model = align(PopularityTrainer().fit(task.interactions), task)
    # u1 bought a before: excluded, its list is b, c, ...: b at 1 of 2 bought -> AP 0.5;
    # allowed: a, b, ... -> AP 1. n1 is new: the best sellers c, d, ... -> AP 1.
    excluded = competition_map(model, task, outer.test, sellers, exclude_purchased=True)
    allowed = competition_map(model, task, outer.test, sellers, exclude_purchased=False)
    assert excluded == pytest.approx((0.5 + 1.0) / 2)
    assert allowed == pytest.approx(1.0)


def test_too_little_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="more than two weeks"):
        prepare_week_split(events_frame([("u", "a", 0), ("u", "b", 3)]), EvalConfig())


def test_a_whole_run_reports_every_model_both_ways() -> None:
    events = random_events(seed=4)
    specs = [
        default_models(Settings(tuning_max_trials=2), None, other_trainer=False)[0],
        ModelSpec("popularity", make_trainer=lambda _values: PopularityTrainer()),
    ]
    config = EvalConfig(search_max_trials=2, search_budget_s=60)
    result = run_competition(events, specs, config, exclude_purchased=True)
    assert [r.name for r in result.rows] == ["implicit", "popularity"]
    assert result.rows[0].pipeline and set(result.rows[0].chosen) == set(search_space(Settings()))
    assert all(0 <= r.map_excluded <= 1 and 0 <= r.map_allowed <= 1 for r in result.rows)
    assert result.test_customers >= result.test_customers_known > 0
    assert CompetitionResult.model_validate_json(result.to_json()) == result
    console = Console(record=True, width=160)
    print_competition(result, console)
    assert "MAP@12" in console.export_text()
