"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recsys.ids import ExternalId

Source = Literal["personalized", "trending"]


class RecommendedItem(BaseModel):
    article_id: str
    score: float
    metadata: dict[str, Any]


class Recommendations(BaseModel):
    customer_id: str
    source: Source
    model_version: str
    items: list[RecommendedItem]
    applied_event_id: str | None = Field(
        default=None, description="The last purchase event already reflected in these results."
    )
    fallback_reason: str | None = Field(
        default=None, description="Why trending was served instead of personalised results."
    )


class PurchaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: ExternalId
    article_id: ExternalId
    event_id: ExternalId | None = Field(
        default=None, description="Client-chosen id for idempotent retries; generated if absent."
    )
    price: float | None = Field(default=None, ge=0)
    ts: datetime | None = Field(default=None, description="Purchase time; now if absent.")


class PurchaseAccepted(BaseModel):
    event_id: str
    status: Literal["accepted"] = "accepted"


class HealthCheck(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    model_version: str | None
    checks: dict[str, str]
