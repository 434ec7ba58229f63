"""The EMA step: direction, scale, first purchase, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ema import ema_update


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_moves_toward_item_and_keeps_scale_of_user() -> None:
    user = np.array([1.0, 0.0], dtype=np.float32)
    item = np.array([0.0, 10.0], dtype=np.float32)  # large norm must not dominate
    out = ema_update(user, item, 0.2, default_norm=1.0)
    np.testing.assert_allclose(out, [0.8, 0.2], rtol=1e-6)
    assert _cos(out, item) > _cos(user, item)


def test_rate_means_the_same_whatever_the_item_norm() -> None:
    user = np.array([3.0, 1.0], dtype=np.float32)
    item = np.array([-1.0, 2.0], dtype=np.float32)
    small = ema_update(user, item, 0.3, 1.0)
    large = ema_update(user, item * 100, 0.3, 1.0)
    np.testing.assert_allclose(small, large, rtol=1e-5)


def test_first_purchase_starts_at_item_direction_with_default_norm() -> None:
    item = np.array([3.0, 4.0], dtype=np.float32)
    out = ema_update(None, item, 0.2, default_norm=2.0)
    np.testing.assert_allclose(out, [1.2, 1.6], rtol=1e-6)
    assert out.dtype == np.float32


def test_rate_one_jumps_to_item_direction() -> None:
    user = np.array([1.0, 1.0], dtype=np.float32)
    item = np.array([0.0, 5.0], dtype=np.float32)
    out = ema_update(user, item, 1.0, 1.0)
    assert _cos(out, item) == pytest.approx(1.0)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_rejects_rates_outside_unit_interval(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        ema_update(np.ones(2, np.float32), np.ones(2, np.float32), rate, 1.0)


def test_weight_scales_the_rate() -> None:
    user = np.array([3.0, 1.0], dtype=np.float32)
    item = np.array([-1.0, 2.0], dtype=np.float32)
    weak = ema_update(user, item, 0.4, 1.0, weight=0.25)
    np.testing.assert_allclose(weak, ema_update(user, item, 0.1, 1.0), rtol=1e-6)
    np.testing.assert_array_equal(ema_update(user, item, 0.4, 1.0, weight=1.0),
                                  ema_update(user, item, 0.4, 1.0))  # fmt: skip


def test_weight_zero_leaves_the_vector_and_gives_nobody_a_first_one() -> None:
    user = np.array([3.0, 1.0], dtype=np.float32)
    item = np.array([-1.0, 2.0], dtype=np.float32)
    out = ema_update(user, item, 0.3, 1.0, weight=0.0)
    np.testing.assert_array_equal(out, user)
    assert out is not user
    with pytest.raises(ValueError, match="weight 0"):
        ema_update(None, item, 0.3, 1.0, weight=0.0)


def test_a_weak_first_event_starts_at_the_item_direction_too() -> None:
    item = np.array([3.0, 4.0], dtype=np.float32)
    out = ema_update(None, item, 0.3, default_norm=2.0, weight=0.05)
    np.testing.assert_allclose(out, [1.2, 1.6], rtol=1e-6)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_rejects_weights_outside_unit_interval(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        ema_update(np.ones(2, np.float32), np.ones(2, np.float32), 0.3, 1.0, weight=weight)
