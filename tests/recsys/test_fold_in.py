"""Fold-in (recsys.fold_in) is implicit's least-squares user vector: the same numbers as
`recalculate_user` on a fitted model, without loading implicit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.fold_in import fold_in, gram


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
