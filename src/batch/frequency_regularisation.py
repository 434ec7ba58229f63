"""Regularisation that grows with how much a row has seen, for `implicit`'s ALS.

`implicit` regularises every user and every item alike (reg * |x|^2). Spark's ALS scales
it by the row's number of interactions (ALS-WR: reg * n * |x|^2), and Rendle et al.
("Revisiting the performance of iALS on item recommendation benchmarks", 2022) by a
power of it. With exponent e, a row that saw n items is regularised by reg * n^e: e = 0
is `implicit`'s own, e = 1 Spark's.

`implicit`'s solver takes one regularisation per call, so the rows are solved in groups
of like counts (half an octave each: counts within a factor of 1.41), each group with
its geometric-mean count's regularisation: the same native solver, a dozen calls per
side and iteration instead of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

# Groups per doubling of the count.
GROUPS_PER_OCTAVE = 2
Solver = Callable[..., None]


def count_groups(counts: npt.NDArray[np.integer]) -> list[tuple[npt.NDArray[np.intp], float]]:
    """Rows grouped by their count (half-octave bins), each with its geometric-mean count;
    rows with no interactions go with those of one."""
    clipped = np.maximum(counts, 1).astype(np.float64)
    bins = np.floor(np.log2(clipped) * GROUPS_PER_OCTAVE).astype(np.int64)
    groups = []
    for group in np.unique(bins):
        rows = np.flatnonzero(bins == group)
        groups.append((rows, float(np.exp(np.log(clipped[rows]).mean()))))
    return groups


def scaled_solver(solve: Solver, exponent: float) -> Solver:
    """`solve(Cui, X, Y, regularization, **kw)` with each row of X regularised by
    regularization * (its count of interactions in Cui) ** exponent."""

    def solve_in_groups(
        cui: sp.csr_matrix, x: npt.NDArray[Any], y: npt.NDArray[Any], regularization: float,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        for rows, count in count_groups(np.diff(cui.indptr)):
            part = np.ascontiguousarray(x[rows])
            solve(cui[rows], part, y, regularization * count**exponent, **kwargs)
            x[rows] = part

    return solve_in_groups
