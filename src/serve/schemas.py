"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recsys.ids import ExternalId

Source = Literal["personalized", "trending"]


class Explanation(BaseModel):
    article_id: str = Field(description="A recent purchase of the customer")
    similarity: float = Field(description="Cosine of its vector and the recommended item's")
    share_percent: float = Field(ge=0, le=100, description="Its share; an item's sum to 100")


class RecommendedItem(BaseModel):
    article_id: str
    score: float = Field(description="Dot product of the query vector and the item's vector")
    metadata: dict[str, Any] = Field(description="The article's fields")
    explanation: list[Explanation] | None = Field(
        default=None, description="With explain=true: the purchases that led here, best first"
    )


class Recommendations(BaseModel):
    customer_id: str
    source: Source
    model_version: str
    diversity_lambda: float = Field(description="1: pure relevance; lower: more diverse (MMR)")
    items: list[RecommendedItem]
    applied_event_id: str | None = Field(
        default=None, description="The last purchase event already reflected in these results."
    )
    experiment: str | None = Field(
        default=None, description="The A/B experiment this customer is in, if one runs"
    )
    variant: str | None = Field(default=None, description="The customer's arm of it")
    recommendation_id: str | None = Field(
        default=None,
        description="In an experiment: pass it back on a purchase of a listed item "
        "(POST /events/purchase) so the purchase is credited to this list",
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
    recommendation_id: ExternalId | None = Field(
        default=None, description="The `recommendation_id` of the list the item was bought from"
    )
    ts: datetime | None = Field(default=None, description="Purchase time; now if absent.")


class PurchaseAccepted(BaseModel):
    event_id: str
    status: Literal["accepted"] = "accepted"


class HealthCheck(BaseModel):
    status: Literal["ready", "degraded", "unavailable"]
    model_version: str | None
    checks: dict[str, str]


class SimilarItems(BaseModel):
    article_id: str
    model_version: str
    items: list[RecommendedItem]


class Popular(BaseModel):
    source: Literal["trending"] = "trending"
    model_version: str
    items: list[RecommendedItem]


class CategoryShare(BaseModel):
    name: str
    count: int
    percent: float


class PurchaseRecord(BaseModel):
    article_id: str
    purchased_at: datetime = Field(description="Day (batch data) or time (live events)")
    metadata: dict[str, Any]


class Profile(BaseModel):
    customer_id: str
    model_version: str
    total_purchases: int
    first_purchase: datetime | None
    last_purchase: datetime | None
    recent_purchases: list[PurchaseRecord]
    top_product_groups: list[CategoryShare]
    top_product_types: list[CategoryShare]
    categories_basis: str = Field(description="What the category shares are computed over")


class ErrorBody(BaseModel):
    detail: str
