"""The trainer role: interactions (customer_id, article_id, weight) in, user and item
factors out, external ids kept. Its adapters (implicit on one node, Spark MLlib on a
cluster) live in the batch; the evaluation's reference models implement it too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[int, int], None]  # (iterations done, iterations total)
INTERACTION_COLUMNS = ("customer_id", "article_id", "weight")


class InteractionBatches(Protocol):
    """Interactions too large for memory as rows: Arrow record batches of
    INTERACTION_COLUMNS, readable more than once (a trainer may pass over them twice)."""

    def batches(self) -> Iterator[pa.RecordBatch]: ...


# Interactions in memory (the evaluation, tests) or streamed (the batch's stored table).
TrainingData: TypeAlias = "pd.DataFrame | InteractionBatches"


def as_pandas(data: TrainingData) -> pd.DataFrame:
    """A trainer's input in memory (small inputs only: the evaluation and tests; the batch
    hands over its table as batches)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    batches = list(data.batches())
    if not batches:
        return pd.DataFrame({name: [] for name in INTERACTION_COLUMNS})
    frame: pd.DataFrame = pa.Table.from_batches(batches).to_pandas()
    return frame


@dataclass(frozen=True)
class Factors:
    """A trained model: row i of user_factors belongs to user_ids[i], likewise for items."""

    user_ids: npt.NDArray[np.object_]
    item_ids: npt.NDArray[np.object_]
    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    params: dict[str, Any]
    train_seconds: float

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])


class Trainer(Protocol):
    name: str

    def fit(self, interactions: TrainingData, progress: Progress | None = None) -> Factors: ...
