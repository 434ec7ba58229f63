"""recsys.blend: the weight's ends are each side alone, each side's scale drops out, and
an item that may not be recommended stays out."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.blend import blend_scores, blends

PERSONAL = np.array([3.0, 2.0, 1.0, 0.5])
TRENDING = np.array([0.0, 1.0, 4.0, 2.0])


def _order(scores: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def test_weight_0_is_the_vector_and_1_is_trending() -> None:
    assert _order(blend_scores(PERSONAL, TRENDING, 0.0)) == [0, 1, 2, 3]
    assert _order(blend_scores(PERSONAL, TRENDING, 1.0)) == [2, 3, 1, 0]


def test_between_them_each_side_is_scaled_by_its_best() -> None:
    # 0.5 * [1, 2/3, 1/3, 1/6] + 0.5 * [0, 1/4, 1, 1/2]
    got = blend_scores(PERSONAL, TRENDING, 0.5)
    assert got == pytest.approx([0.5, 11 / 24, 2 / 3, 1 / 3])
    # A side's scale drops out: the same blend with the scores ten times larger.
    assert blend_scores(PERSONAL * 10, TRENDING * 7, 0.5) == pytest.approx(got)


def test_rows_are_blended_each_on_its_own_scale() -> None:
    rows = np.stack([PERSONAL, PERSONAL * 100])
    got = blend_scores(rows, np.stack([TRENDING, TRENDING]), 0.3)
    assert got[0] == pytest.approx(got[1])


def test_an_item_masked_on_either_side_stays_out() -> None:
    personal = PERSONAL.copy()
    personal[0] = -np.inf  # bought before: never recommended, and not its best
    got = blend_scores(personal, TRENDING, 0.0)
    assert np.isneginf(got[0])
    assert got[1] == pytest.approx(1.0)  # now the best of what may be recommended
    for weight in (0.0, 0.5, 1.0):
        trending = TRENDING.copy()
        trending[3] = -np.inf
        assert np.isneginf(blend_scores(PERSONAL, trending, weight)[3])


def test_a_side_with_no_positive_score_is_taken_as_it_is() -> None:
    got = blend_scores(np.array([-1.0, -2.0]), np.zeros(2), 0.5)
    assert got == pytest.approx([-0.5, -1.0])


def test_a_weight_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        blend_scores(PERSONAL, TRENDING, 1.5)


def test_who_is_blended() -> None:
    assert blends(0.5, 2, 1) and blends(0.5, 2, 2) and blends(0.5, 2, 0)
    assert not blends(0.5, 2, 3)
    assert not blends(0.0, 2, 1)  # weight 0: the vector alone
