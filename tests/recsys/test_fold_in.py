"""Fold-in (recsys.fold_in) is implicit's least-squares user vector: the same numbers as
`recalculate_user` on a fitted model, without loading implicit; its online form weighs
the latest items by recency in events and steps toward the event's item."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.ema import ema_update
from recsys.fold_in import FoldInModel, Recency, event_ages, fold_in, gram


def test_fold_in_is_implicits_recalculate_user() -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    users, items = 60, 40
    dense = (rng.random((users, items)) < 0.15) * rng.integers(1, 4, (users, items))
    matrix = sp.csr_matrix(dense.astype(np.float32))
    with threadpool_limits(1, "blas"):  # as the trainer runs it
        model = AlternatingLeastSquares(
            factors=8, regularization=0.5, alpha=3.0, iterations=5, random_state=0
        )
        model.fit(matrix, show_progress=False)
    item_gram = gram(model.item_factors)
    for user in (0, 7, 33):
        row = matrix[user]
        expected = model.recalculate_user(user, row)
        got = fold_in(item_gram, model.item_factors[row.indices], 3.0 * row.data, 0.5)
        assert got == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_no_items_is_the_zero_vector() -> None:
    vector = fold_in(np.eye(4), np.zeros((0, 4)), np.zeros(0), 0.1)
    assert vector.shape == (4,) and not vector.any()


# ---------------------------------------------------------------- the online form (Recency)


def test_ages_count_the_items_bought_later_and_the_event_applied_is_zero() -> None:
    times = [10.0, 30.0, 20.0, 30.0]  # the two of time 30 (one basket) share an age
    assert event_ages(times).tolist() == [3.0, 0.0, 2.0, 0.0]
    # The event being applied is the newest, whatever the times: the rest one older.
    assert event_ages(times, newest=2).tolist() == [3.0, 1.0, 0.0, 1.0]
    assert event_ages(times, newest=1).tolist() == [3.0, 0.0, 2.0, 1.0]


def _folding(factors: int = 6, items: int = 30) -> tuple[FoldInModel, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    catalogue = rng.normal(0, 1, (items, factors)).astype(np.float32)
    model = FoldInModel(gram(catalogue), regularization=0.5, alpha=4.0, half_life_days=30.0)
    return model, {f"a{i}": catalogue[i] for i in range(items)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_no_half_life_and_no_step_is_the_plain_fold_in_exactly() -> None:
    model, vectors = _folding()
    day = 86_400.0
    bought = {"a1": 0.0, "a2": 3 * day, "a3": 10 * day}
    now = 10 * day
    decay = np.exp2(-np.array([10.0, 7.0, 0.0]) / 30.0)  # the day decay stays the base
    plain = fold_in(model.item_gram, np.stack([vectors[a] for a in bought]), 4.0 * decay, 0.5)
    for got in (
        model.user_vector(bought, vectors, now),
        model.user_vector(bought, vectors, now, latest="a3", recency=Recency(0.0, 0.0)),
    ):
        assert got is not None and np.array_equal(got, plain)


def test_a_recent_item_pulls_the_vector_more_than_an_old_one_at_the_same_weight() -> None:
    folding, vectors = _folding()
    model = replace(folding, half_life_days=0.0)
    history = {f"a{i}": float(i) for i in range(8)}  # a7 the newest, a0 the oldest
    by_recency = model.user_vector(history, vectors, 8.0, latest="a7", recency=Recency(2.0))
    flat = model.user_vector(history, vectors, 8.0, latest="a7")
    assert by_recency is not None and flat is not None
    # Every weight is 1 without recency; with it the newest counts most, the oldest least.
    gain = _cosine(by_recency, vectors["a7"]) - _cosine(flat, vectors["a7"])
    loss = _cosine(by_recency, vectors["a0"]) - _cosine(flat, vectors["a0"])
    assert gain > 0.05 and loss < 0, (gain, loss)
    # The same items, the order reversed: now a0 is pulled toward.
    reversed_history = {a: 8.0 - t for a, t in history.items()}
    back = model.user_vector(reversed_history, vectors, 9.0, latest="a0", recency=Recency(2.0))
    assert back is not None and _cosine(back, vectors["a0"]) > _cosine(flat, vectors["a0"]) + 0.05


def test_the_step_moves_the_solved_vector_toward_the_events_item_as_the_ema_does() -> None:
    model, vectors = _folding()
    history = {"a1": 0.0, "a2": 86_400.0, "a3": 2 * 86_400.0}
    now = 2 * 86_400.0
    solved = model.user_vector(history, vectors, now, latest="a2", recency=Recency(4.0))
    stepped = model.user_vector(history, vectors, now, latest="a2", recency=Recency(4.0, 0.3))
    assert solved is not None and stepped is not None
    assert np.array_equal(stepped, ema_update(solved, vectors["a2"], 0.3, 1.0))
    assert _cosine(stepped, vectors["a2"]) > _cosine(solved, vectors["a2"])
    # A view is the event: age 0 at its weight, and it steps by its weight's share.
    view = (vectors["a9"], 0.5)
    plain = model.user_vector(history, vectors, now, view, recency=Recency(4.0))
    viewed = model.user_vector(history, vectors, now, view, recency=Recency(4.0, 0.3))
    assert plain is not None and viewed is not None
    assert np.array_equal(viewed, ema_update(plain, vectors["a9"], 0.3, 1.0, 0.5))


def test_recency_names_and_refuses_what_it_cannot_apply() -> None:
    assert [Recency().name, Recency(8).name, Recency(8, 0.2).name, Recency(0, 0.2).name] == [
        "fold-in", "fold-in h8", "fold-in h8 step0.2", "fold-in step0.2"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="half-life >= 0 and step in"):
        Recency(-1.0)
    with pytest.raises(ValueError, match="half-life >= 0 and step in"):
        Recency(8.0, 1.5)
