"""GET /models: the live model version, how it was trained, on what, and how good it is."""

from __future__ import annotations

from fastapi import APIRouter

from recsys.model_store import Manifest
from serve.deps import Model
from serve.responses import NOT_LIVE

router = APIRouter(tags=["models"])


@router.get("/models", response_model=Manifest, responses=NOT_LIVE)
async def live_model(model: Model) -> Manifest:
    """The live version's manifest: trainer and parameters, the Delta table versions it
    read and wrote, the training cutoff and its holdout metrics."""
    return model.manifest
