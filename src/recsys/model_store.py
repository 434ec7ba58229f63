"""Model versions on disk: one directory each, with a manifest, the index shard and trending."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from recsys.index.beams import IndexCalibration
from recsys.model_layout import CONTENT_MODEL, FACTORS, MANIFEST, TRENDING, version_dir
from recsys.trending_lists import TrendingLists


class TrialRecord(BaseModel):
    """One point the batch's search tried: the settings it set, and how it did."""

    params: dict[str, float]
    validation_ndcg: float
    seconds: float


class TuningRecord(BaseModel):
    """The batch's search: its protocol, what it chose and every trial, best first."""

    protocol: str
    budget_s: float
    seconds: float
    chosen: dict[str, float]
    # The validation NDCG of the settings as they were, when the search tried them.
    settings_ndcg: float | None = None
    trials: list[TrialRecord]


class OnlineUpdateRecord(BaseModel):
    """RECSYS_ONLINE_UPDATE=auto: the holdout replay that chose how events move the
    version's vectors (batch.online_update)."""

    protocol: str
    chosen: str | None  # "ema 0.3", "fold-in h8"; None: too few events, the settings' EMA
    customers: int
    events: int
    static_hit_rate: float
    hit_rates: dict[str, float]  # every update replayed, by name
    seconds: float


class Manifest(BaseModel):
    """What a version is: how it was trained, on which data, and how to read its vectors."""

    version: str
    created_at: datetime
    trainer: str
    params: dict[str, Any]
    dim: int
    users: int
    items: int
    # The data the model saw: Delta table versions and the last purchase time.
    data_version: dict[str, int]
    cutoff: datetime
    # Scale for a first-purchase vector, so the EMA means the same for every model.
    user_norm_median: float
    train_seconds: float
    metrics: dict[str, float] = {}
    # The search that chose the parameters (None: tuning was off).
    tuning: TuningRecord | None = None
    # The online update chosen on the holdout's replay (None: RECSYS_ONLINE_UPDATE named
    # one, or the holdout was off).
    online_update: OnlineUpdateRecord | None = None
    # The HNSW beams chosen on the version's index (None: a version from before; the
    # defaults serve it).
    index: IndexCalibration | None = None


def new_version(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")[:-3]
    return f"v{stamp}"


def _file(models_dir: Path, version: str, name: str) -> Path:
    """A file of the version's folder, the folder made if this is its first file."""
    folder = version_dir(models_dir, version)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def write_manifest(models_dir: Path, manifest: Manifest) -> None:
    _file(models_dir, manifest.version, MANIFEST).write_text(manifest.model_dump_json(indent=2))


def read_manifest(models_dir: Path, version: str) -> Manifest:
    return Manifest.model_validate_json((version_dir(models_dir, version) / MANIFEST).read_text())


def write_trending(models_dir: Path, version: str, lists: TrendingLists) -> None:
    _file(models_dir, version, TRENDING).write_text(json.dumps(lists.to_dict()))


def read_trending(models_dir: Path, version: str) -> TrendingLists:
    raw = json.loads((version_dir(models_dir, version) / TRENDING).read_text())
    return TrendingLists.from_dict(raw)


def write_factors(
    models_dir: Path,
    version: str,
    *,
    user_ids: npt.NDArray[np.object_],
    item_ids: npt.NDArray[np.object_],
    user_factors: npt.NDArray[np.float32],
    item_factors: npt.NDArray[np.float32],
) -> None:
    """The trained factors with their id maps: what a rebuild, replay or rollback needs."""
    np.savez(
        _file(models_dir, version, FACTORS),
        user_ids=user_ids.astype(str),
        item_ids=item_ids.astype(str),
        user_factors=user_factors,
        item_factors=item_factors,
    )


def read_factors(models_dir: Path, version: str) -> dict[str, npt.NDArray[Any]]:
    with np.load(version_dir(models_dir, version) / FACTORS) as data:
        return {name: data[name] for name in data.files}


def write_content_model(
    models_dir: Path, version: str, arrays: Mapping[str, npt.NDArray[Any]]
) -> None:
    """The map from article metadata into this version's item space (batch.content_vectors),
    which places articles that have no purchases yet."""
    np.savez(_file(models_dir, version, CONTENT_MODEL), **cast(dict[str, Any], arrays))


def read_content_model(models_dir: Path, version: str) -> dict[str, npt.NDArray[Any]] | None:
    """None for a version trained without a content model."""
    path = version_dir(models_dir, version) / CONTENT_MODEL
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
