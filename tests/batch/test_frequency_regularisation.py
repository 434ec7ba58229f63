"""implicit's ALS with each row regularised by reg * count ** exponent (ALS-WR at 1):
the rows solved in groups of like counts by implicit's own solver."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.frequency_regularisation import count_groups
from batch.implicit_trainer import ImplicitTrainer
from recsys.fold_in import fold_in, gram


def test_groups_hold_every_row_once_with_counts_within_a_half_octave() -> None:
    counts = np.asarray([0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 1_000])
    groups = count_groups(counts)
    rows = np.sort(np.concatenate([r for r, _ in groups]))
    assert rows.tolist() == list(range(len(counts)))
    for members, mean in groups:
        held = np.maximum(counts[members], 1)
        assert held.max() / held.min() < 2**0.5
        assert held.min() - 1e-9 <= mean <= held.max() + 1e-9


def _shop() -> pd.DataFrame:
    """Light customers (2 items each) and heavy ones (16), counts the groups hold exactly."""
    rng = np.random.default_rng(4)
    rows = []
    for customer in range(300):
        bought = 2 if customer % 2 else 16
        for item in rng.choice(60, bought, replace=False):
            rows.append((f"c{customer:03d}", f"a{item:02d}", 1.0))
    return pd.DataFrame(rows, columns=["customer_id", "article_id", "weight"])


@pytest.mark.parametrize("exponent", [0.0, 1.0])
def test_each_customer_is_the_least_squares_vector_at_their_own_regularisation(
    exponent: float,
) -> None:
    """At convergence a user's vector is the fold-in of their items with the same
    regularisation (reg * count ** exponent): the heavy customers' differs from the one
    an unscaled regularisation gives when the exponent is 1."""
    interactions = _shop()
    trainer = ImplicitTrainer(factors=8, iterations=40, regularization=2.0, alpha=5.0, seed=0,
                              regularization_exponent=exponent)  # fmt: skip
    factors = trainer.fit(interactions)
    assert factors.params.get("regularization_exponent", 0.0) == exponent
    item_row = {str(a): i for i, a in enumerate(factors.item_ids)}
    item_gram = gram(factors.item_factors)
    gaps = {True: [], False: []}
    for user, customer in enumerate(factors.user_ids):
        items = [item_row[a] for a in interactions.loc[interactions["customer_id"] == customer,
                                                        "article_id"]]  # fmt: skip
        vectors, confidence = factors.item_factors[items], np.full(len(items), 5.0)
        mine = fold_in(item_gram, vectors, confidence, 2.0, exponent)
        other = fold_in(item_gram, vectors, confidence, 2.0, 1.0 - exponent)
        got = factors.user_factors[user]
        assert np.linalg.norm(got - mine) <= 0.05 * np.linalg.norm(mine)
        gaps[len(items) == 16].append(np.linalg.norm(got - other) / np.linalg.norm(got))
    # One item's worth of regularisation is the same either way; sixteen's is not.
    assert np.median(gaps[False]) < 0.5 * np.median(gaps[True])
    assert np.median(gaps[True]) > 0.2
