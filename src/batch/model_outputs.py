"""A version's factors as gold Delta tables, so they can be queried beside the data."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from batch.lake import Lake, Written
from recsys.index.base import COLLABORATIVE, PLACED_BY_FIELD
from recsys.trainer import Factors


def _factors_table(
    id_name: str, ids: npt.NDArray[np.object_], vectors: npt.NDArray[np.float32], version: str
) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    rows = pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1]))
    return pa.table(
        {
            id_name: pa.array(ids.astype(str), pa.string()),
            "factors": rows.cast(pa.list_(pa.float32())),
            "model_version": pa.array([version] * len(ids), pa.string()),
        }
    )


def write_model_outputs(
    store: Lake, version: str, factors: Factors, placed_by: npt.NDArray[np.object_] | None = None
) -> dict[str, Written]:
    """gold.user_factors and gold.item_factors hold the newest version's vectors; an item's
    `placed_by` says whether ALS or its metadata (batch.content_vectors) placed it."""
    items = _factors_table("article_id", factors.item_ids, factors.item_factors, version)
    placed = list(placed_by) if placed_by is not None else [COLLABORATIVE] * len(factors.item_ids)
    tables = {
        "user_factors": _factors_table(
            "customer_id", factors.user_ids, factors.user_factors, version
        ),
        "item_factors": items.append_column(PLACED_BY_FIELD, pa.array(placed, pa.string())),
    }
    return {
        f"gold.{name}": store.write(store.spark.createDataFrame(table), "gold", name)
        for name, table in tables.items()
    }
