"""Typed dependencies: the clients created once in the lifespan, injected per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from recsys.experiments.definitions import Experiments
from recsys.experiments.ledger import Ledger
from recsys.settings import Settings
from recsys.stores import AsyncRedis, HotRedis, SyncRedis
from recsys.user_store import ServingUserStore, UserStore
from serve.catalog_feed import CatalogFeed
from serve.live_model import LiveModel, ServedModel
from serve.publisher import EventPublisher
from serve.telemetry import Telemetry


@dataclass
class AppState:
    settings: Settings
    redis: AsyncRedis
    # The /recommend hot path's reads (recsys.multiplexed_redis explains why not redis-py).
    hot_redis: HotRedis
    model: LiveModel
    publisher: EventPublisher
    telemetry: Telemetry
    experiments: Experiments
    ledger: Ledger
    catalog: CatalogFeed
    # Blocking work off the event loop (metrics scrapes, erasure) uses this client.
    sync_redis: SyncRedis
    # The user store: as the event loop reads it, and whole for blocking work (erasure).
    users: ServingUserStore
    user_store: UserStore


# Dependencies are async: FastAPI would run a plain def in its threadpool, a thread hop
# per request for a dictionary lookup.
async def get_state(request: Request) -> AppState:
    return app_state(request)


async def get_model(request: Request) -> ServedModel:
    return served_model(app_state(request))


# The same as plain calls, for the hot routes that skip FastAPI's dependency solving.
def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.recsys
    return state


def served_model(state: AppState, version: str | None = None) -> ServedModel:
    """The live model (or an experiment's pinned version); 503 while none is live."""
    model = state.model.serving(version)
    if model is None:
        raise HTTPException(503, "no model version is live yet: run `recsys batch` first")
    return model


State = Annotated[AppState, Depends(get_state)]
Model = Annotated[ServedModel, Depends(get_model)]
