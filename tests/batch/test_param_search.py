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


def test_a_range_per_another_dimension_is_searched_as_a_ratio() -> None:
    """The objective, the trials and the choice see the value itself (ratio x its `per`
    dimension); the start is tried as given when its ratio is in range."""
    tried: list[Values] = []

    def ridge(values: Values) -> float:
        tried.append(values)
        return -abs(values["reg"] / values["alpha"] - 0.1)  # best anywhere on reg = 0.1 alpha

    space = {"alpha": LogRange(1.0, 100.0), "reg": LogRange(0.01, 1.0, per="alpha")}
    start = {"alpha": 20.0, "reg": 1.0}
    found = search(space, ridge, start=start, budget_s=60, max_trials=30, seed=1)
    assert tried[0] == pytest.approx(start) and found.start_score == pytest.approx(-0.05)
    for values in tried:
        assert 0.01 <= values["reg"] / values["alpha"] <= 1.0
    assert [t.params for t in found.trials if t.params == found.chosen]
    assert found.chosen["reg"] / found.chosen["alpha"] == pytest.approx(0.1, abs=0.02)
    # A start whose ratio is out of range is not forced on the search.
    outside = search(space, ridge, start={"alpha": 1.0, "reg": 5.0}, budget_s=60, max_trials=2)
    assert outside.start_score is None
