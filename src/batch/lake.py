"""Delta tables of the lake (bronze, silver, gold), written and read with delta-rs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake


def table_path(lake_dir: Path, layer: str, name: str) -> Path:
    return lake_dir / layer / name


def overwrite(lake_dir: Path, layer: str, name: str, data: pa.Table) -> int:
    """Replace a table's contents in one commit (a re-run is idempotent); return its version."""
    path = table_path(lake_dir, layer, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(path), data, mode="overwrite", schema_mode="overwrite")
    return int(DeltaTable(str(path)).version())


def read(lake_dir: Path, layer: str, name: str) -> pa.Table:
    return DeltaTable(str(table_path(lake_dir, layer, name))).to_pyarrow_table()
