"""The versioned event envelope on the `events` topic, keyed by customer_id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recsys.ids import ExternalId

SCHEMA_VERSION: Literal[1] = 1


def new_event_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """What every consumer reads; `event_id` makes each of them idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: ExternalId = Field(default_factory=new_event_id)
    event_type: Literal["purchase"] = "purchase"
    customer_id: ExternalId
    article_id: ExternalId
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    price: float | None = Field(default=None, ge=0)
    recommendation_id: ExternalId | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        return cls.model_validate_json(raw)
