"""The one parameter search (batch.param_search): a grid when the space is choices
alone, TPE from the start values otherwise, and the budget rule."""

from __future__ import annotations

import pytest

from batch.param_search import (
    BUDGET_TRIALS,
    MAX_BUDGET_S,
    MIN_BUDGET_S,
    LogRange,
    Values,
    budget,
    search,
)


def peak(values: Values) -> float:
    """Best at x = 3, rate = 0.1."""
    return -abs(values.get("x", 3.0) - 3.0) - abs(values.get("rate", 0.1) - 0.1)


def test_a_space_of_choices_is_tried_whole_and_the_best_is_chosen() -> None:
    found = search({"x": (1.0, 2.0, 3.0, 4.0)}, peak, budget_s=60, max_trials=10)
    assert sorted(t.params["x"] for t in found.trials) == [1.0, 2.0, 3.0, 4.0]
    assert found.chosen == {"x": 3.0} and found.trials[0].params == {"x": 3.0}


def test_a_sampled_space_starts_from_the_start_values_and_scores_them() -> None:
    tried: list[Values] = []

    def objective(values: Values) -> float:
        tried.append(values)
        return peak(values)

    space = {"x": (1.0, 2.0, 3.0), "rate": LogRange(0.01, 1.0)}
    found = search(space, objective, start={"x": 2.0, "rate": 0.5}, budget_s=60, max_trials=6)
    assert tried[0] == {"x": 2.0, "rate": 0.5} and len(tried) == 6
    assert found.start_score == pytest.approx(-1.4)
    assert found.trials[0].validation_ndcg >= found.start_score
    # A start value outside the space is not forced on it.
    again = search(space, objective, start={"x": 9.0, "rate": 0.5}, budget_s=60, max_trials=2)
    assert again.start_score is None


def test_an_empty_space_is_one_trial() -> None:
    found = search({}, lambda values: 1.0)
    assert found.chosen == {} and len(found.trials) == 1


def test_the_unset_budget_grows_with_the_first_trial_within_its_bounds() -> None:
    assert budget(None, 0.1) == MIN_BUDGET_S
    assert budget(None, 5.0) == BUDGET_TRIALS * 5.0
    assert budget(None, 600.0) == MAX_BUDGET_S
    assert budget(42.0, 600.0) == 42.0
