"""Make a trained model servable: index shard, Redis vectors and history, then go live.

The live-version pointer moves last, so a reader never sees a half-written version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import redis

from batch.trainer import Factors
from recsys import keys
from recsys.availability import AVAILABLE_FIELD
from recsys.ids import item_point_id
from recsys.index.base import COLLABORATIVE, PLACED_BY_FIELD, IndexedItem, IndexWriter
from recsys.vectors import encode

Advance = Callable[[int], None]
CHUNK = 5_000


def _chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def write_index(
    writer: IndexWriter,
    factors: Factors,
    metadata: pd.DataFrame,
    advance: Advance,
    placed_by: npt.NDArray[np.object_] | None = None,
    unavailable: AbstractSet[str] = frozenset(),
) -> None:
    """metadata is indexed by article_id and holds the payload fields; placed_by says per
    item row how it got its vector (batch.content_vectors; all collaborative when None);
    every item is `available` unless it is in `unavailable` (recsys.availability)."""
    check_point_ids([str(a) for a in factors.item_ids])
    meta = metadata.reindex(factors.item_ids).fillna("")
    meta[PLACED_BY_FIELD] = list(placed_by) if placed_by is not None else COLLABORATIVE
    meta[AVAILABLE_FIELD] = [str(a) not in unavailable for a in factors.item_ids]
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in meta.to_dict("records")
    ]
    for part in _chunks(len(factors.item_ids), 2_000):
        writer.upsert(
            [
                IndexedItem(str(aid), vec, payload)
                for aid, vec, payload in zip(
                    factors.item_ids[part], factors.item_factors[part], records[part], strict=True
                )
            ]
        )
        advance(part.stop - part.start)
    writer.finish()


class PointIdCollisionError(RuntimeError):
    """Two article ids hash to one point id of the index."""


def check_point_ids(article_ids: list[str]) -> None:
    seen: dict[int, str] = {}
    for article_id in article_ids:
        other = seen.setdefault(item_point_id(article_id), article_id)
        if other != article_id:
            raise PointIdCollisionError(
                f"articles {other!r} and {article_id!r} hash to the same index point id; "
                "rename one of them"
            )


def write_vectors(client: redis.Redis, version: str, factors: Factors, advance: Advance) -> None:
    for ids, matrix, key in (
        (factors.item_ids, factors.item_factors, keys.item_vector),
        (factors.user_ids, factors.user_factors, keys.user_vector),
    ):
        for part in _chunks(len(ids)):
            pipe = client.pipeline(transaction=False)
            for external_id, vector in zip(ids[part], matrix[part], strict=True):
                pipe.set(key(version, str(external_id)), encode(vector))
            pipe.execute()
            advance(part.stop - part.start)


def write_history(
    client: redis.Redis,
    histories: Iterable[tuple[str, dict[str, int]]],
    max_items: int,
    advance: Advance,
    ttl_s: int = 0,
) -> int:
    """Merge each customer's most recent purchases (article -> unix time) into their
    history, which then expires ttl_s later unless written again (0: never); return how
    many customers were written."""
    pipe = client.pipeline(transaction=False)
    pending = written = 0
    for customer_id, items in histories:
        key = keys.history(customer_id)
        pipe.zadd(key, cast(Any, items))
        # Keep only the newest max_items, including what the updater added meanwhile.
        pipe.zremrangebyrank(key, 0, -max_items - 1)
        if ttl_s:
            pipe.expire(key, ttl_s)
        pending += 1
        if pending == CHUNK:
            pipe.execute()
            advance(pending)
            written += pending
            pipe = client.pipeline(transaction=False)
            pending = 0
    pipe.execute()
    advance(pending)
    return written + pending


def write_meta(client: redis.Redis, version: str, fields: dict[str, float]) -> None:
    # redis-py's stubs want a mapping invariant in a wide key type; the values are plain.
    client.hset(keys.model_meta(version), mapping=cast(Any, fields))


def write_profiles(
    client: redis.Redis,
    version: str,
    profiles: Iterable[tuple[str, dict[str, int]]],
    advance: Advance,
) -> None:
    """The version's purchase counts per customer (the updater increments them after)."""
    pipe = client.pipeline(transaction=False)
    pending = 0
    for customer_id, fields in profiles:
        pipe.hset(keys.profile(version, customer_id), mapping=cast(Any, fields))
        pending += 1
        if pending == CHUNK:
            pipe.execute()
            advance(pending)
            pipe = client.pipeline(transaction=False)
            pending = 0
    pipe.execute()
    advance(pending)


def compact_persistence(client: redis.Redis) -> bool:
    """Ask the store to rewrite its append-only file after a batch wrote millions of keys:
    a restart then loads one compact snapshot instead of replaying every command. A store
    that refuses (persistence off, a rewrite running, the command disabled on a managed
    service) is left as it is; returns whether the rewrite started."""
    try:
        client.bgrewriteaof()
    except redis.ResponseError:
        return False
    return True
