"""A version's factors as gold Delta tables, so they can be queried beside the data."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from batch.lake import Lake, Written
from batch.trainer import Factors


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


def write_model_outputs(store: Lake, version: str, factors: Factors) -> dict[str, Written]:
    """gold.user_factors and gold.item_factors hold the newest version's vectors."""
    out: dict[str, Written] = {}
    for name, id_name, ids, vectors in (
        ("user_factors", "customer_id", factors.user_ids, factors.user_factors),
        ("item_factors", "article_id", factors.item_ids, factors.item_factors),
    ):
        frame = store.spark.createDataFrame(_factors_table(id_name, ids, vectors, version))
        out[f"gold.{name}"] = store.write(frame, "gold", name)
    return out
