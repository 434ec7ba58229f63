"""The content model's runtime half in the core: its numpy-only prediction is the fitted
map on the sparse features, to the float."""

from __future__ import annotations

import numpy as np

from recsys.content_model import Featurizer, LinearMap

ROWS = [
    {"product_group_name": "Shoes", "colour_group_name": "Black", "detail_desc": "soft knit"},
    {"product_group_name": "Accessories", "detail_desc": "knit knit scarf"},
    {"product_group_name": "Unseen", "colour_group_name": "Black"},
    {},
]


def test_numpy_cells_give_what_the_sparse_matrix_gives() -> None:
    featurizer = Featurizer.fit(ROWS[:2], text_buckets=32)
    rng = np.random.default_rng(0)
    linear = LinearMap(rng.normal(size=(featurizer.width, 5)), rng.normal(size=5))
    sparse = linear.apply(featurizer.transform(ROWS))
    np.testing.assert_allclose(linear.apply_cells(featurizer.cells(ROWS)), sparse, rtol=1e-12)
    # A row without any known feature is the intercept alone.
    np.testing.assert_allclose(sparse[3], linear.intercept)
