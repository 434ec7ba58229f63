"""The batch's interactions table handed to a trainer: Spark reads its frame, a
single-node trainer streams its Arrow batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from batch.lake import Lake, arrow_batches, read, table_path
from recsys.trainer import INTERACTION_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame


@dataclass(frozen=True)
class StoredInteractions:
    """Interactions the batch wrote as a Delta table: Spark reads `frame`, a single-node
    trainer streams the table's Arrow batches from `path`, so the table never passes
    through Spark's collect (the real data set's 28M rows do not fit its result limit)."""

    frame: SparkFrame
    path: Path

    @classmethod
    def of(cls, lake: Lake, layer: str, name: str) -> StoredInteractions:
        """A table the batch wrote to `lake`, handed to a trainer."""
        return cls(read(lake, layer, name), table_path(lake.lake_dir, layer, name))

    def batches(self) -> Iterator[pa.RecordBatch]:
        return arrow_batches(self.path, INTERACTION_COLUMNS)
