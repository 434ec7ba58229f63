"""The versioned event envelope on the `events` topic, keyed by customer_id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from recsys.ids import ExternalId

if TYPE_CHECKING:
    from recsys.settings import Settings

# Version 1 gained the weaker event types without a bump: a purchase message of before
# still parses, and nothing in it changed meaning. A consumer of before dead-letters the
# new types, so consumers are upgraded before the API starts accepting them.
SCHEMA_VERSION: Literal[1] = 1

EventType = Literal["purchase", "view", "click", "add_to_cart"]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)
PURCHASE: Final = "purchase"


def new_event_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """What every consumer reads; `event_id` makes each of them idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: ExternalId = Field(default_factory=new_event_id)
    event_type: EventType = PURCHASE
    customer_id: ExternalId
    article_id: ExternalId
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    price: float | None = Field(default=None, ge=0)
    recommendation_id: ExternalId | None = None

    @property
    def is_purchase(self) -> bool:
        """Only purchases are history: excluded from recommendations, counted, credited."""
        return self.event_type == PURCHASE

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        return cls.model_validate_json(raw)


def event_weights(settings: Settings) -> dict[str, float]:
    """How much each type counts, in the EMA (a share of the rate) and in training (a
    day's confidence): a purchase 1, the weaker signals their setting (0: ignored)."""
    return {
        "purchase": 1.0,
        "view": settings.event_weight_view,
        "click": settings.event_weight_click,
        "add_to_cart": settings.event_weight_add_to_cart,
    }
