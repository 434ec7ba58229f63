"""The Delta lake of the batch (bronze, silver, gold): Spark computes, one of two writers
commits, and Spark reads a table back at one snapshot.

- `DeltaRsLake` (default): Spark's executors write the Parquet files into the table's
  folder and the driver commits them with delta-rs, so no Delta jars are needed. Spark
  reads a table through the active files of its log (never the folder, which still
  holds replaced files until they are vacuumed).
- `DeltaSparkLake`: Delta's own Spark data source, where its jars can be fetched.

Every write replaces the table's contents in one commit, so re-running a step is
idempotent; what an overwrite replaced stays for time travel until the retention ends.

A table with a `customer_id` column is written clustered by it: range-partitioned and
sorted, in files of at most `RECSYS_LAKE_FILE_ROWS` rows, each file's smallest and largest id
in its Delta statistics. An erasure's DELETE of one customer then rewrites the one file
that can hold them instead of every file of the table (docs/scale.md, "Erasure").
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class Written:
    """What one commit produced: the table version and the rows it now holds."""

    version: int
    rows: int


@dataclass(frozen=True)
class Snapshot:
    """A table read at one version: the frame and that version."""

    frame: DataFrame
    version: int


CLUSTER_COLUMN = "customer_id"


def clustered(frame: DataFrame, file_rows: int) -> tuple[DataFrame, dict[str, str]]:
    """The frame in customer_id ranges, each sorted, and the writer's options that cut
    its files to file_rows; any other frame as it is."""
    if CLUSTER_COLUMN not in frame.columns:
        return frame, {}
    ranged = frame.repartitionByRange(CLUSTER_COLUMN).sortWithinPartitions(CLUSTER_COLUMN)
    return ranged, {"maxRecordsPerFile": str(file_rows)}


def table_path(lake_dir: Path, layer: str, name: str) -> Path:
    return lake_dir / layer / name


class Lake(Protocol):
    spark: SparkSession
    lake_dir: Path

    def write(self, frame: DataFrame, layer: str, name: str) -> Written: ...

    def snapshot(self, path: Path) -> Snapshot | None:
        """The table at `path` at its current version, or None when there is no table."""
        ...


def read(lake: Lake, layer: str, name: str) -> DataFrame:
    """A table the batch wrote earlier in the run (it must exist)."""
    path = table_path(lake.lake_dir, layer, name)
    snap = lake.snapshot(path)
    if snap is None:
        raise FileNotFoundError(f"no Delta table at {path}")
    return snap.frame


@dataclass
class _LakeOptions:
    """What both writers are made with."""

    spark: SparkSession
    lake_dir: Path
    retention_hours: float
    file_rows: int = Settings.model_fields["lake_file_rows"].default


class DeltaRsLake(_LakeOptions):
    """Spark writes Parquet, delta-rs commits it: Delta tables without Delta's jars."""

    def write(self, frame: DataFrame, layer: str, name: str) -> Written:
        from pyspark.sql.pandas.types import to_arrow_schema

        path = table_path(self.lake_dir, layer, name)
        # A folder per write: its files become the table's only active files on commit;
        # a write that dies before the commit leaves files no version refers to.
        folder = f"write-{uuid.uuid4().hex}"
        frame, options = clustered(frame, self.file_rows)
        frame.write.options(**options).parquet(str(path / folder))
        actions, rows = _add_actions(path, folder)
        schema = to_arrow_schema(frame.schema)
        if DeltaTable.is_deltatable(str(path)):
            table = DeltaTable(str(path))
            changes: list[AddAction | RemoveAction] = list(actions)
            table.create_write_transaction(changes, mode="overwrite", schema=schema)
        else:
            create_table_with_add_actions(
                str(path), DeltaSchema.from_arrow(schema), actions, mode="error"
            )
            table = DeltaTable(str(path))
        table.update_incremental()
        version = int(table.version())
        # Vacuum commits too: only when an overwrite left files past the retention.
        hours = int(self.retention_hours)
        if table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=True):
            table.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False)
        return Written(version, rows)

    def snapshot(self, path: Path) -> Snapshot | None:
        from pyspark.sql.pandas.types import from_arrow_schema

        try:
            table = DeltaTable(str(path))
        except TableNotFoundError:
            return None
        uris = table.file_uris()
        if uris:
            reader = self.spark.read.option("mergeSchema", "true")
            if table.metadata().partition_columns:
                # The partition values live in the folders' names: Spark reads them from
                # the paths below the table's root.
                reader = reader.option("basePath", str(path))
            frame = reader.parquet(*uris)
        else:
            schema = from_arrow_schema(_arrow_schema(table))
            frame = self.spark.createDataFrame([], schema)
        return Snapshot(frame, int(table.version()))


# Rows per Arrow batch read back on the driver: ~10-50 MB of ids, whatever the table's size.
BATCH_ROWS = 200_000


def arrow_batches(
    path: Path, columns: Sequence[str] | None = None, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """A Delta table's current version on the driver, batch by batch (delta-rs reads the
    active files; nothing passes through Spark's collect, so no result-size limit and
    memory bounded by one batch). Works for tables either writer committed."""
    dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    for batch in dataset.to_batches(
        columns=list(columns) if columns is not None else None, batch_size=batch_rows
    ):
        if batch.num_rows:
            yield batch


def spilled_batches(
    frame: DataFrame, scratch_dir: Path, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """A Spark result of any size on the driver, batch by batch: the executors write it as
    Parquet under scratch_dir (a filesystem the driver shares, like the lake), pyarrow
    streams it back, and the folder is removed once read (or abandoned)."""
    import pyarrow.dataset as ds

    folder = scratch_dir / f"spill-{uuid.uuid4().hex}"
    try:
        frame.write.parquet(str(folder))
        for batch in ds.dataset(str(folder), format="parquet").to_batches(batch_size=batch_rows):
            if batch.num_rows:
                yield batch
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema())


def _file_stats(file: Path, rows: int) -> dict[str, object]:
    """Delta statistics of a Parquet file: its rows, and the smallest and largest value of
    each string column whose every row group has them (what a DELETE or a filtered read
    prunes files by)."""
    meta = pq.read_metadata(file)
    low: dict[str, str] = {}
    high: dict[str, str] = {}
    for index in range(meta.num_columns):
        column = meta.schema.column(index)
        if column.physical_type != "BYTE_ARRAY" or column.logical_type.type != "STRING":
            continue
        found = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
        if not found or any(f is None or not f.has_min_max for f in found):
            continue
        low[column.path] = min(str(f.min) for f in found if f is not None)
        high[column.path] = max(str(f.max) for f in found if f is not None)
    stats: dict[str, object] = {"numRecords": rows}
    if low:
        stats |= {"minValues": low, "maxValues": high}
    return stats


def _add_actions(table: Path, folder: str) -> tuple[list[AddAction], int]:
    actions: list[AddAction] = []
    total = 0
    for file in sorted((table / folder).glob("*.parquet")):
        rows = pq.read_metadata(file).num_rows
        stat = file.stat()
        actions.append(
            AddAction(
                path=f"{folder}/{file.name}",
                size=stat.st_size,
                partition_values={},
                modification_time=int(stat.st_mtime * 1000),
                data_change=True,
                stats=json.dumps(_file_stats(file, rows)),
            )
        )
        total += rows
    # Spark's local file system leaves checksum files beside the data; Delta has no use
    # for them.
    for crc in (table / folder).glob(".*.crc"):
        os.unlink(crc)
    return actions, total


class DeltaSparkLake(_LakeOptions):
    """Delta's own Spark writer and reader (delta-spark's jars on the session)."""

    def _version(self, path: Path) -> int:
        from delta.tables import DeltaTable as SparkDeltaTable

        newest = SparkDeltaTable.forPath(self.spark, str(path)).history(1).first()
        assert newest is not None
        return int(newest["version"])

    def write(self, frame: DataFrame, layer: str, name: str) -> Written:
        from delta.tables import DeltaTable as SparkDeltaTable

        path = table_path(self.lake_dir, layer, name)
        frame, options = clustered(frame, self.file_rows)
        frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").options(
            **options
        ).save(str(path))
        version = self._version(path)
        rows = self.spark.read.format("delta").option("versionAsOf", version).load(str(path))
        SparkDeltaTable.forPath(self.spark, str(path)).vacuum(self.retention_hours)
        return Written(version, rows.count())

    def snapshot(self, path: Path) -> Snapshot | None:
        from delta.tables import DeltaTable as SparkDeltaTable

        if not SparkDeltaTable.isDeltaTable(self.spark, str(path)):
            return None
        version = self._version(path)
        frame = self.spark.read.format("delta").option("versionAsOf", version).load(str(path))
        return Snapshot(frame, version)


def open_lake(settings: Settings, spark: SparkSession) -> Lake:
    if settings.lake_writer == "delta-spark":
        return DeltaSparkLake(
            spark, settings.lake_dir, settings.lake_retention_hours, settings.lake_file_rows
        )
    return DeltaRsLake(
        spark, settings.lake_dir, settings.lake_retention_hours, settings.lake_file_rows
    )
