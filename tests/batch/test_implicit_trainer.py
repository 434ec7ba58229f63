"""implicit's input matrix: streamed from Arrow batches it is the in-memory one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from batch.implicit_trainer import matrix_from_batches, to_matrix


def interactions() -> pd.DataFrame:
    """Every user of three groups bought most of their group's items."""
    rows = [
        (f"u{g}-{u}", f"i{g}-{j}", 1.0)
        for g in range(3)
        for u in range(20)
        for j in range(8)
        if j != u % 8
    ]
    return pd.DataFrame(rows, columns=["customer_id", "article_id", "weight"])


def test_the_streamed_matrix_is_the_in_memory_one() -> None:
    """Ids and cells come out the same however the rows are batched."""
    data = interactions()
    data = data.assign(weight=np.arange(len(data), dtype=np.float32) / 7)
    shuffled = data.sample(frac=1.0, random_state=3).reset_index(drop=True)
    table = pa.Table.from_pandas(shuffled, preserve_index=False)
    streamed = matrix_from_batches(lambda: table.to_batches(max_chunksize=17))
    expected = to_matrix(data)
    assert list(streamed.user_ids) == list(expected.user_ids)
    assert list(streamed.item_ids) == list(expected.item_ids)
    assert (streamed.matrix != expected.matrix).nnz == 0


def test_no_interactions_make_an_empty_matrix() -> None:
    empty = matrix_from_batches(lambda: iter([]))
    assert empty.matrix.shape == (0, 0)
    assert len(empty.user_ids) == len(empty.item_ids) == 0
