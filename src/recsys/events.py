"""The versioned event envelope on the `events` topic, keyed by customer_id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

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


# What an event is, for the API, the updater, the archiver, replay and the batch alike
# (docs/events.md): an event time from 2000 to a day ahead of now (a naive time is UTC,
# an offset is converted to UTC), ids of the id rules, a finite price up to MAX_PRICE.
EARLIEST_EVENT: Final = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD: Final = timedelta(days=1)
MAX_PRICE: Final = 1e9

# The archive's columns for when the stack received an event (its broker time, and that
# time's UTC day): what erasure, the updater and a replay go by, never the client's `ts`.
RECEIVED_AT: Final = "received_at"
RECEIVED_DATE: Final = "received_date"


def _event_time(value: datetime) -> datetime:
    try:
        at = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 at +14:00 is before year 1 in UTC
        raise ValueError("event time out of range: from 2000-01-01 to a day ahead") from None
    if at < EARLIEST_EVENT:
        raise ValueError("event time before 2000-01-01")
    if at > datetime.now(UTC) + MAX_AHEAD:
        raise ValueError("event time more than a day ahead of the server's clock")
    return at


EventTime = Annotated[datetime, AfterValidator(_event_time)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]


def new_event_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """What every consumer reads; (customer_id, event_id) makes each of them idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: ExternalId = Field(default_factory=new_event_id)
    event_type: EventType = PURCHASE
    customer_id: ExternalId
    article_id: ExternalId
    ts: EventTime = Field(default_factory=lambda: datetime.now(UTC))
    price: Price | None = None
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


def validation_reason(exc: ValidationError) -> str:
    """A validation error as one line naming each field: what a dead letter says."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
    )
