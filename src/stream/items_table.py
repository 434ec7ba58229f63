"""The catalog topic's Delta tables, one row per article, its newest message winning:
`items` (upserts) and `availability`. The archiver creates and writes them; the next
batch reads `items` beside articles.csv (batch.ingest), so those articles survive it, and
marks the items `availability` holds (batch.pipeline), so a sold-out one stays out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from confluent_kafka import Message
from pydantic import BaseModel, ValidationError

from recsys.articles import CatalogMessage
from recsys.events import validation_reason
from recsys.hm_schema import ARTICLES_SCHEMA
from recsys.tables import DELTA_TABLES, Tables

# Takes a message that is not what its topic carries, with the reason.
Refuse = Callable[[Message, str], None]

MESSAGE_COLUMNS: Final = [
    ("message_id", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("schema_version", pa.int32()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
]
ITEMS_SCHEMA: Final = pa.schema([*ARTICLES_SCHEMA, *MESSAGE_COLUMNS])
AVAILABILITY_SCHEMA: Final = pa.schema(
    [("article_id", pa.string()), ("available", pa.bool_()), *MESSAGE_COLUMNS]
)


def _newest(
    messages: Sequence[Message], op: str, refuse: Refuse | None = None
) -> tuple[list[tuple[CatalogMessage, Message]], int]:
    """The newest valid message of `op` of each article, and how many were invalid (each
    given to `refuse` with its reason)."""
    newest: dict[str, tuple[CatalogMessage, Message]] = {}
    invalid = 0
    for raw in messages:
        if raw.error() is not None:
            continue
        try:
            message = CatalogMessage.from_bytes(raw.value() or b"")
        except ValidationError as exc:
            invalid += 1  # the serving processes skip it too
            if refuse is not None:
                refuse(raw, validation_reason(exc))
            continue
        held = newest.get(message.key)
        if message.op == op and (held is None or message.supersedes(held[0])):
            newest[message.key] = (message, raw)
    return list(newest.values()), invalid


def _row(message: CatalogMessage, raw: Message, body: BaseModel | None) -> dict[str, Any]:
    assert body is not None  # the message's op names it (CatalogMessage)
    return {
        **body.model_dump(),
        "message_id": message.message_id,
        "ts": message.ts,
        "schema_version": message.schema_version,
        "kafka_partition": raw.partition(),
        "kafka_offset": raw.offset(),
    }


def item_rows(messages: Sequence[Message], refuse: Refuse | None = None) -> tuple[pa.Table, int]:
    """The newest upsert of each article as a row, and how many messages were invalid
    (each given to `refuse`: the archiver dead-letters them, once for every process)."""
    newest, invalid = _newest(messages, "upsert", refuse)
    rows = [_row(m, raw, m.article) for m, raw in newest]
    return pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), invalid


def availability_rows(
    messages: Sequence[Message], _refuse: Refuse | None = None
) -> tuple[pa.Table, int]:
    """The newest availability of each article as a row (invalid messages are counted
    once, by item_rows)."""
    newest, _ = _newest(messages, "availability")
    rows = [_row(m, raw, m.availability) for m, raw in newest]
    return pa.Table.from_pylist(rows, schema=AVAILABILITY_SCHEMA), 0


def merge_newest(path: Path, rows: pa.Table, tables: Tables = DELTA_TABLES) -> int:
    """Insert new articles and replace those whose row is older; return the rows written.
    A redelivered message is no newer than its row, so it changes nothing."""
    # Ties go to the later message, as in the serving processes (CatalogMessage).
    newer = "s.ts > t.ts OR (s.ts = t.ts AND s.kafka_offset > t.kafka_offset)"
    return tables.upsert(path, rows, "t.article_id = s.article_id", newer)
