"""A catalogue article as validated at the door (POST /items, `recsys catalog upsert`), and
the versioned message that carries it on the `catalog` topic, keyed by article_id (and op)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from recsys.availability import AVAILABLE_FIELD
from recsys.hm_schema import ARTICLE_METADATA_FIELDS, CONTENT_FIELDS
from recsys.ids import ExternalId
from recsys.index.base import PLACED_BY_FIELD

SCHEMA_VERSION: Literal[1] = 1

# Names and categories of the real file are at most ~50 characters and a description ~800:
# the bounds leave room and still keep one message, and the payload held per item, small.
MAX_NAME_LENGTH: Final = 200
MAX_CODE_LENGTH: Final = 16
MAX_DESCRIPTION_LENGTH: Final = 4_000
# H&M numbers its categories; -1 is its "Unknown".
MIN_NUMBER, MAX_NUMBER = -1, 1_000_000_000


def _blank_is_none(value: Any) -> Any:
    """A CSV leaves a missing number as an empty cell: that is no value, not a bad one."""
    return None if isinstance(value, str) and not value.strip() else value


Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NAME_LENGTH)]
RequiredName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH)
]
Number = Annotated[
    Annotated[int, Field(ge=MIN_NUMBER, le=MAX_NUMBER)] | None, BeforeValidator(_blank_is_none)
]


class Article(BaseModel):
    """One row of the H&M `articles.csv` schema (recsys.hm_schema.ARTICLES_SCHEMA).

    Required: the id and what filters and displays an item (its name, product type and
    group). Other names default to empty, which the content model counts as no feature,
    and numbers to none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: ExternalId
    product_code: Number = None
    prod_name: RequiredName
    product_type_no: Number = None
    product_type_name: RequiredName
    product_group_name: RequiredName
    graphical_appearance_no: Number = None
    graphical_appearance_name: Name = ""
    colour_group_code: Number = None
    colour_group_name: Name = ""
    perceived_colour_value_id: Number = None
    perceived_colour_value_name: Name = ""
    perceived_colour_master_id: Number = None
    perceived_colour_master_name: Name = ""
    department_no: Number = None
    department_name: Name = ""
    index_code: Annotated[
        str, StringConstraints(strip_whitespace=True, max_length=MAX_CODE_LENGTH)
    ] = ""
    index_name: Name = ""
    index_group_no: Number = None
    index_group_name: Name = ""
    section_no: Number = None
    section_name: Name = ""
    garment_group_no: Number = None
    garment_group_name: Name = ""
    detail_desc: Annotated[
        str, StringConstraints(strip_whitespace=True, max_length=MAX_DESCRIPTION_LENGTH)
    ] = ""

    def payload(self, placed_by: str, available: bool | None = None) -> dict[str, Any]:
        """The item's metadata in the index, as the batch writes it (batch.publish). An
        article's availability is not part of it: it changes by its own messages, and an
        upsert keeps the value the item had (`available`)."""
        payload = {
            **{name: getattr(self, name) for name in ARTICLE_METADATA_FIELDS},
            PLACED_BY_FIELD: placed_by,
        }
        if available is not None:
            payload[AVAILABLE_FIELD] = available
        return payload

    def content_row(self) -> dict[str, str]:
        """The fields the content model reads (batch.content_vectors)."""
        return {name: getattr(self, name) for name in CONTENT_FIELDS}


class Availability(BaseModel):
    """Whether an article may be recommended (sold out, withdrawn: not). A catalogue file
    may say true/false, 1/0 or yes/no; JSON says true or false."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: ExternalId
    available: Annotated[
        StrictBool,
        BeforeValidator(lambda v: _WORDS.get(v.strip().lower(), v) if isinstance(v, str) else v),
    ]


_WORDS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def new_message_id() -> str:
    return uuid.uuid4().hex


class CatalogMessage(BaseModel):
    """An article added or changed (`upsert`), or made available or not (`availability`).
    Each op of an article has its own newest `ts`, which wins everywhere (the serving
    processes, the archived tables), so a redelivered message changes nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: ExternalId = Field(default_factory=new_message_id)
    op: Literal["upsert", "availability"] = "upsert"
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    article: Article | None = None
    availability: Availability | None = None

    @model_validator(mode="after")
    def _body_matches_op(self) -> CatalogMessage:
        body = {"upsert": self.article, "availability": self.availability}
        if body[self.op] is None or sum(b is not None for b in body.values()) != 1:
            raise ValueError(f"a {self.op} message carries its {self.op} body and nothing else")
        return self

    @classmethod
    def upsert(cls, article: Article, ts: datetime) -> CatalogMessage:
        return cls(op="upsert", ts=ts, article=article)

    @classmethod
    def set_availability(cls, availability: Availability, ts: datetime) -> CatalogMessage:
        return cls(op="availability", ts=ts, availability=availability)

    @property
    def key(self) -> str:
        if self.article is not None:
            return self.article.article_id
        assert self.availability is not None  # _body_matches_op
        return self.availability.article_id

    @property
    def topic_key(self) -> str:
        """The message's key on the compacted catalog topic: one per article and op, so
        compaction keeps an article's newest upsert and its newest availability both (an
        availability must not erase the article it is about)."""
        return self.key if self.op == "upsert" else f"{self.key}/availability"

    def supersedes(self, other: CatalogMessage) -> bool:
        """This message is the article's newer state (a tie goes to the later arrival)."""
        return self.ts >= other.ts

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CatalogMessage:
        return cls.model_validate_json(raw)
