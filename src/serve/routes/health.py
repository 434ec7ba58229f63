"""Liveness and readiness. Ready fails only when recommendations cannot be served."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve.deps import State
from serve.schemas import HealthCheck

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/health/ready", response_model=HealthCheck, responses={503: {"model": HealthCheck}})
async def ready(state: State) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.redis.ping(), timeout=state.settings.redis_timeout_s)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    model = state.model.current
    if model is None:
        checks["index"] = "no live model"
    else:
        try:
            timeout = state.settings.qdrant_timeout_s
            await asyncio.wait_for(asyncio.to_thread(model.index.check), timeout=timeout)
            checks["index"] = "ok"
        except Exception as exc:  # trending still serves: degraded, not unavailable
            checks["index"] = f"down: {type(exc).__name__}"
    broker_ok = await asyncio.to_thread(state.publisher.broker_reachable)
    checks["kafka"] = "ok" if broker_ok else "down: events are refused with 503"
    status: Literal["ready", "degraded", "unavailable"]
    if model is None:
        status = "unavailable"
    elif all(v == "ok" for v in checks.values()):
        status = "ready"
    else:
        status = "degraded"
    body = HealthCheck(status=status, model_version=model.version if model else None, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unavailable" else 200)
