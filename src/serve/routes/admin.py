"""POST /admin/models/{version}/promote and /admin/models/rollback: what `recsys models
promote` and `rollback` do, over HTTP, for keys of the admin role."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Final, TypeVar

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from recsys.replay import ReplayReport
from recsys.settings import Settings
from recsys.stores import redis_client
from recsys.user_store import RedisUserStore, UserStore
from recsys.versions import VersionError, promote, rollback
from serve.access import ACCESS_RESPONSES, require
from serve.actor import acting_key
from serve.deps import State
from serve.schemas import ErrorBody

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[require("admin")], responses=ACCESS_RESPONSES
)

# A replay writes every unseen archived event: the CLI allows a call as long.
ADMIN_REDIS_TIMEOUT_S: Final = 30.0
# A version names a folder under the models dir: no dot or slash, so never another one.
VersionName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="A model version, as `recsys models list` names it",
    ),
]
REDIS_DOWN: Final[dict[int | str, dict[str, object]]] = {
    503: {"model": ErrorBody, "description": "Redis did not answer; nothing moved, try again"}
}
T = TypeVar("T")


class ModelChange(BaseModel):
    live_version: str = Field(description="Live now; serving processes follow within a second")
    replayed_events: int = Field(description="Archived events the version had not seen")
    applied: int = Field(description="Of those, applied to its user vectors now")
    duplicates: int = Field(description="Of those, already applied before")


def _change(version: str, report: ReplayReport) -> ModelChange:
    return ModelChange(
        live_version=version,
        replayed_events=report.events,
        applied=report.applied,
        duplicates=report.duplicates,
    )


async def _on_store(settings: Settings, action: Callable[[UserStore], T]) -> T:
    """The action on a worker thread with a client of its own (versions.py is blocking)."""

    def run() -> T:
        client = redis_client(
            settings.redis_url or "", ADMIN_REDIS_TIMEOUT_S, cluster=settings.redis_cluster
        )
        try:
            return action(RedisUserStore(client))
        finally:
            client.close()

    try:
        return await asyncio.to_thread(run)
    except RedisError as exc:
        raise HTTPException(503, f"Redis did not answer, nothing moved: {exc}") from exc


@router.post(
    "/models/{version}/promote",
    response_model=ModelChange,
    responses={404: {"model": ErrorBody, "description": "No such version"}, **REDIS_DOWN},
)
async def promote_version(state: State, version: VersionName, request: Request) -> ModelChange:
    """Replay the archived events the version has not seen onto it, then make it live."""
    settings, actor = state.settings, await acting_key(request)
    try:
        report = await _on_store(
            settings, lambda store: promote(settings, store, version, actor=actor)
        )
    except VersionError as exc:
        raise HTTPException(404, str(exc)) from exc
    return _change(version, report)


@router.post(
    "/models/rollback",
    response_model=ModelChange,
    responses={409: {"model": ErrorBody, "description": "No previous version"}, **REDIS_DOWN},
)
async def rollback_version(state: State, request: Request) -> ModelChange:
    """Make the previous live version live again, brought up to date by replay."""
    settings, actor = state.settings, await acting_key(request)
    try:
        version, report = await _on_store(
            settings, lambda store: rollback(settings, store, actor=actor)
        )
    except VersionError as exc:
        raise HTTPException(409, str(exc)) from exc
    return _change(version, report)
