"""Where a model version's files lie: one folder per version under the models folder.

Apart from recsys.model_store (which reads and writes them) so that the item index,
which keeps its shard there, needs nothing else of the model store.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
FACTORS = "factors.npz"
TRENDING = "trending.json"
SHARD = "shard"
CONTENT_MODEL = "content_model.npz"


def version_dir(models_dir: Path, version: str) -> Path:
    return models_dir / version


def shard_dir(models_dir: Path, version: str) -> Path:
    return version_dir(models_dir, version) / SHARD
