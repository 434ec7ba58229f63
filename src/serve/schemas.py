"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from recsys.articles import Article, Availability
from recsys.events import EventTime, Price
from recsys.ids import ExternalId

Source = Literal["personalized", "trending"]


class Explanation(BaseModel):
    article_id: str = Field(description="A recent purchase of the customer")
    similarity: float = Field(description="Cosine of its vector and the recommended item's")
    share_percent: float = Field(ge=0, le=100, description="Its share; an item's sum to 100")


class RecommendedItem(BaseModel):
    article_id: str
    score: float = Field(
        description="Dot product of the query vector and the item's vector; the blend's "
        "score when the response has a trending_weight"
    )
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
        default=None,
        description="The last event (of any type) already reflected in these results.",
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
    trending_weight: float | None = Field(
        default=None,
        description="For a customer who has bought little: the weight of trending blended "
        "with their vector (RECSYS_BLEND_TRENDING_WEIGHT); null when the vector ranked alone",
    )


class EventIn(BaseModel):
    """A purchase, view, click or add-to-cart; the path names the type."""

    model_config = ConfigDict(extra="forbid")

    customer_id: ExternalId
    article_id: ExternalId
    event_id: ExternalId | None = Field(
        default=None, description="Client-chosen id for idempotent retries; generated if absent."
    )
    price: Price | None = None
    recommendation_id: ExternalId | None = Field(
        default=None,
        description="The `recommendation_id` of the list the item was bought (or seen) from; "
        "only purchases are credited to experiments",
    )
    ts: EventTime | None = Field(
        default=None,
        description="Event time; now if absent. A time without an offset is UTC; from "
        "2000-01-01 to a day ahead of the server's clock.",
    )


class EventAccepted(BaseModel):
    event_id: str
    status: Literal["accepted"] = "accepted"


# One request is one round of broker acknowledgements; a larger catalogue goes in several,
# or through `recsys catalog upsert --file`.
MAX_ARTICLES_PER_REQUEST: Final = 1_000


def _each_article_once(records: Sequence[Article | Availability]) -> None:
    first: dict[str, int] = {}
    for position, record in enumerate(records):
        seen = first.setdefault(record.article_id, position)
        if seen != position:
            raise ValueError(
                f"article_id {record.article_id} is given twice (items {seen} and {position})"
            )


class ArticlesIn(
    RootModel[Annotated[list[Article], Field(min_length=1, max_length=MAX_ARTICLES_PER_REQUEST)]]
):
    """New or changed articles, each article_id once."""

    @model_validator(mode="after")
    def _each_article_once(self) -> ArticlesIn:
        _each_article_once(self.root)
        return self


class AvailabilityIn(
    RootModel[
        Annotated[list[Availability], Field(min_length=1, max_length=MAX_ARTICLES_PER_REQUEST)]
    ]
):
    """Articles made available or not, each article_id once."""

    @model_validator(mode="after")
    def _each_article_once(self) -> AvailabilityIn:
        _each_article_once(self.root)
        return self


class ArticlesAccepted(BaseModel):
    article_ids: list[str] = Field(description="Every article of the request, in its order")
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


class Erasure(BaseModel):
    customer_id: str
    erased_at: datetime = Field(description="Events of the customer up to this time never count")
    redis_keys: int = Field(
        description="Keys deleted: vectors, profiles and applied events of every version, "
        "history, last event, experiment impressions and outcomes"
    )
    delta_rows: dict[str, int] = Field(description="Rows deleted per Delta table (layer.name)")
    factor_rows: dict[str, int] = Field(
        description="Rows deleted from each kept model version's factors file"
    )
    vacuumed_files: int = Field(
        description="Files of earlier Delta table versions deleted, those older than "
        "RECSYS_LAKE_RETENTION_HOURS (a deleted row leaves its old file at the first vacuum "
        "after the retention)"
    )
    seconds: dict[str, float] = Field(
        description="How long each part took: redis, delta (every table), vacuum, factors"
    )
