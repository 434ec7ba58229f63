"""The user store role: what the stack knows of each customer, per model version, and the
pointers between model versions.

A customer's state is their vector in each model version, their purchase history
(article ids by purchase time, newest kept), their purchase counts as each version knows
them, the last event applied and which events each version has applied (recsys.apply).
The pointers say which version is live, which are candidates being promoted, and which
were live before (what rollback returns to).

`UserStore` is the whole role for the batch, the updater, promotion, pruning and
erasure; `ServingUserStore` is its side for the API's event loop (one round trip per
request on the hot path). `RedisUserStore` and `RedisServingUserStore` put it in Redis
or Valkey (the key layout is recsys.keys; the apply script is recsys.apply's).
`tests/recsys/test_user_store_contract.py` holds every store to the role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from recsys import keys
from recsys.redis_routing import get_many
from recsys.vectors import Vector, decode, encode

if TYPE_CHECKING:
    from recsys.apply import EventApplier
    from recsys.settings import Settings
    from recsys.stores import AsyncRedis, HotRedis, SyncRedis

Advance = Callable[[int], None]
VectorKind = Literal["user", "item"]
# Keys written per pipeline round trip, and deleted per UNLINK.
CHUNK: Final = 5_000
UNLINK_BATCH: Final = 1_000
# Keys a SCAN call looks at (a bound on each call's work, not a count of results).
SCAN_COUNT: Final = 1_000


def _nothing(_done: int) -> None:
    return None


@dataclass(frozen=True)
class Pointers:
    """Where the versions stand: live, candidates, rollback history (newest first)."""

    live: str | None
    candidates: set[str]
    history: list[str]

    def named(self) -> set[str]:
        """Every version a pointer names."""
        return {*([self.live] if self.live else []), *self.candidates, *self.history}


@dataclass(frozen=True)
class CustomerState:
    """What a recommendation needs of a customer, read in one round trip."""

    vector: Vector | None
    purchased: list[str]  # newest first
    last_event_id: str | None


class UserStore(Protocol):
    # --------------------------------------------------------------- the version pointers
    def live_version(self) -> str | None: ...

    def pointers(self) -> Pointers: ...

    def add_candidate(self, version: str) -> None:
        """The updater applies events to a candidate too, while it is being promoted."""
        ...

    def make_live(self, version: str) -> None:
        """At once: version live, no longer a candidate, the one it replaces (if another)
        first in the rollback history."""
        ...

    def pop_previous(self) -> str | None:
        """Take the newest version of the rollback history out of it (None: empty)."""
        ...

    def forget_previous(self, version: str) -> None:
        """Take version out of the rollback history."""
        ...

    def drop_version(self, version: str) -> int:
        """Out of every pointer, then every key of the version deleted; how many."""
        ...

    # ------------------------------------------------------ a version's data (the batch)
    def write_vectors(
        self,
        version: str,
        kind: VectorKind,
        ids: Sequence[object] | npt.NDArray[np.object_],
        matrix: npt.NDArray[np.float32],
        advance: Advance = _nothing,
    ) -> None: ...

    def write_meta(self, version: str, fields: Mapping[str, float | str]) -> None: ...

    def meta(self, version: str) -> dict[str, str]: ...

    def write_histories(
        self,
        histories: Iterable[tuple[str, dict[str, int]]],
        max_items: int,
        ttl_s: int = 0,
        advance: Advance = _nothing,
    ) -> int:
        """Merge each customer's purchases (article -> unix time) into their history,
        keeping the newest max_items (with what the updater added meanwhile), expiring
        ttl_s later unless written again (0: never); how many customers were written."""
        ...

    def write_profiles(
        self,
        version: str,
        profiles: Iterable[tuple[str, dict[str, int]]],
        advance: Advance = _nothing,
    ) -> None:
        """The version's purchase counts per customer (the updater increments them)."""
        ...

    def compact(self) -> bool:
        """After millions of writes: ask the store to compact what it persists (an append
        -only file rewritten); whether it started."""
        ...

    # ------------------------------------------------------------------------- reads
    def user_vectors(self, version: str, customer_ids: Sequence[str]) -> list[Vector | None]: ...

    def item_vectors(self, version: str, article_ids: Sequence[str]) -> list[Vector | None]: ...

    def history(self, customer_id: str) -> list[tuple[str, float]]:
        """(article id, unix time) of the customer's purchases, newest first."""
        ...

    def profile(self, version: str, customer_id: str) -> dict[str, str]: ...

    # -------------------------------------------------------------- events and erasure
    def applier(self, settings: Settings) -> EventApplier:
        """What applies events to a version's state, each once (recsys.apply)."""
        ...

    def erase_customer(self, customer_id: str, versions: Iterable[str]) -> int:
        """Every key of the customer, in these versions and outside them; how many."""
        ...

    def record_erasure(self, customer_hash: str, erased_at_s: float) -> None:
        """The erasure record the updater reads (recsys.erasure keeps the durable one)."""
        ...

    def erased_at(self, customer_hashes: Sequence[str]) -> dict[str, float]:
        """Of these customers (by hash), those erased and when (unix seconds)."""
        ...


class ServingUserStore(Protocol):
    """The user store as the API's event loop reads it (and the one write it makes: the
    vector of an article a serving process placed from the catalogue)."""

    async def live_version(self) -> str | None: ...

    async def customer_state(self, version: str, customer_id: str) -> CustomerState: ...

    async def history_and_profile(
        self, version: str, customer_id: str
    ) -> tuple[list[tuple[str, float]], dict[str, str]]: ...

    async def customers_with_vectors(self, version: str, limit: int, calls: int) -> list[str]:
        """Up to limit customers the version has a vector for, in at most `calls` bounded
        scans (fewer where the scans find fewer)."""
        ...

    async def put_item_vectors(self, version: str, vectors: Mapping[str, Vector]) -> None: ...


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _history(raw: Sequence[tuple[bytes, float]]) -> list[tuple[str, float]]:
    return [(_text(article), float(ts)) for article, ts in raw]


def _profile(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _vector_key(kind: VectorKind) -> Callable[[str, str], str]:
    return keys.user_vector if kind == "user" else keys.item_vector


def _glob_escape(text: str) -> str:
    """A literal for a SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def user_vector_pattern(version: str) -> tuple[str, str, str]:
    """(SCAN pattern, prefix, suffix) of the version's user vectors: the customer id is
    what lies between prefix and suffix."""
    prefix, suffix = keys.user_vector(version, "\0").split("\0")
    return f"{_glob_escape(prefix)}*{_glob_escape(suffix)}", prefix, suffix


class RedisUserStore:
    """The user store in Redis or Valkey, through one client (created once per process)."""

    def __init__(self, client: SyncRedis) -> None:
        self.client = client

    def live_version(self) -> str | None:
        raw = self.client.get(keys.LIVE_VERSION)
        return _text(raw) if isinstance(raw, bytes | str) else None

    def pointers(self) -> Pointers:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.LIVE_VERSION)
        pipe.smembers(keys.CANDIDATE_VERSIONS)
        pipe.lrange(keys.VERSION_HISTORY, 0, -1)
        live, candidates, history = pipe.execute()
        return Pointers(
            live=_text(live) if live else None,
            candidates={_text(c) for c in candidates},
            history=[_text(h) for h in history],
        )

    def add_candidate(self, version: str) -> None:
        self.client.sadd(keys.CANDIDATE_VERSIONS, version)

    def make_live(self, version: str) -> None:
        current = self.live_version()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.LIVE_VERSION, version)
        pipe.srem(keys.CANDIDATE_VERSIONS, version)
        if current is not None and current != version:
            pipe.lpush(keys.VERSION_HISTORY, current)
        pipe.execute()

    def pop_previous(self) -> str | None:
        raw = self.client.lpop(keys.VERSION_HISTORY)
        return _text(raw) if isinstance(raw, bytes | str) else None

    def forget_previous(self, version: str) -> None:
        self.client.lrem(keys.VERSION_HISTORY, 1, version)

    def drop_version(self, version: str) -> int:
        # Out of the lists first, so nothing points at a version while it is deleted.
        pipe = self.client.pipeline(transaction=True)
        pipe.srem(keys.CANDIDATE_VERSIONS, version)
        pipe.lrem(keys.VERSION_HISTORY, 0, version)
        pipe.execute()
        deleted = 0
        batch: list[str | bytes] = []
        for key in self.client.scan_iter(match=keys.version_pattern(version), count=CHUNK):
            batch.append(key)
            if len(batch) == CHUNK:
                deleted += int(self.client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self.client.unlink(*batch))
        return deleted

    def write_vectors(
        self,
        version: str,
        kind: VectorKind,
        ids: Sequence[object] | npt.NDArray[np.object_],
        matrix: npt.NDArray[np.float32],
        advance: Advance = _nothing,
    ) -> None:
        key = _vector_key(kind)
        for start in range(0, len(ids), CHUNK):
            stop = min(start + CHUNK, len(ids))
            pipe = self.client.pipeline(transaction=False)
            for external_id, vector in zip(ids[start:stop], matrix[start:stop], strict=True):
                pipe.set(key(version, str(external_id)), encode(vector))
            pipe.execute()
            advance(stop - start)

    def write_meta(self, version: str, fields: Mapping[str, float | str]) -> None:
        # redis-py's stubs want a mapping invariant in a wide key type; the values are plain.
        self.client.hset(keys.model_meta(version), mapping=cast(Any, dict(fields)))

    def meta(self, version: str) -> dict[str, str]:
        return _profile(cast(Mapping[bytes, bytes], self.client.hgetall(keys.model_meta(version))))

    def write_histories(
        self,
        histories: Iterable[tuple[str, dict[str, int]]],
        max_items: int,
        ttl_s: int = 0,
        advance: Advance = _nothing,
    ) -> int:
        return self._chunked(
            histories, lambda pipe, c, items: _merge_history(pipe, c, items, max_items, ttl_s),
            advance,
        )  # fmt: skip

    def write_profiles(
        self,
        version: str,
        profiles: Iterable[tuple[str, dict[str, int]]],
        advance: Advance = _nothing,
    ) -> None:
        self._chunked(
            profiles,
            lambda pipe, c, fields: pipe.hset(keys.profile(version, c), mapping=cast(Any, fields)),
            advance,
        )

    def _chunked(
        self,
        rows: Iterable[tuple[str, dict[str, int]]],
        write: Callable[[Any, str, dict[str, int]], object],
        advance: Advance,
    ) -> int:
        """Each (customer, fields) written by `write` into a pipeline sent every CHUNK."""
        pipe = self.client.pipeline(transaction=False)
        pending = written = 0
        for customer_id, fields in rows:
            write(pipe, customer_id, fields)
            pending += 1
            if pending == CHUNK:
                pipe.execute()
                advance(pending)
                written += pending
                pipe = self.client.pipeline(transaction=False)
                pending = 0
        pipe.execute()
        advance(pending)
        return written + pending

    def compact(self) -> bool:
        try:
            if isinstance(self.client, RedisCluster):
                self.client.bgrewriteaof(target_nodes=self.client.get_primaries())
            else:
                self.client.bgrewriteaof()
        except redis.ResponseError:  # persistence off, a rewrite running, or not allowed
            return False
        return True

    def user_vectors(self, version: str, customer_ids: Sequence[str]) -> list[Vector | None]:
        return self._vectors("user", version, customer_ids)

    def item_vectors(self, version: str, article_ids: Sequence[str]) -> list[Vector | None]:
        return self._vectors("item", version, article_ids)

    def _vectors(self, kind: VectorKind, version: str, ids: Sequence[str]) -> list[Vector | None]:
        if not ids:
            return []
        key = _vector_key(kind)
        return [decode(raw) for raw in get_many(self.client, [key(version, i) for i in ids])]

    def history(self, customer_id: str) -> list[tuple[str, float]]:
        raw = self.client.zrevrange(keys.history(customer_id), 0, -1, withscores=True)
        return _history(cast(Sequence[tuple[bytes, float]], raw))

    def profile(self, version: str, customer_id: str) -> dict[str, str]:
        raw = self.client.hgetall(keys.profile(version, customer_id))
        return _profile(cast(Mapping[bytes, bytes], raw))

    def applier(self, settings: Settings) -> EventApplier:
        from recsys.apply import EventApplier

        return EventApplier(settings, self.client)

    def erase_customer(self, customer_id: str, versions: Iterable[str]) -> int:
        names = keys.customer_keys(customer_id, sorted(set(versions)))
        deleted = 0
        for start in range(0, len(names), UNLINK_BATCH):
            deleted += int(self.client.unlink(*names[start : start + UNLINK_BATCH]))
        return deleted

    def record_erasure(self, customer_hash: str, erased_at_s: float) -> None:
        self.client.hset(keys.ERASED, customer_hash, f"{erased_at_s:.6f}")

    def erased_at(self, customer_hashes: Sequence[str]) -> dict[str, float]:
        if not customer_hashes:
            return {}
        values = cast(list[bytes | None], self.client.hmget(keys.ERASED, list(customer_hashes)))
        return {h: float(v) for h, v in zip(customer_hashes, values, strict=True) if v is not None}


def _merge_history(pipe: Any, customer_id: str, items: dict[str, int], max_items: int,
                   ttl_s: int) -> None:  # fmt: skip
    key = keys.history(customer_id)
    pipe.zadd(key, cast(Any, items))
    # Keep only the newest max_items, including what the updater added meanwhile.
    pipe.zremrangebyrank(key, 0, -max_items - 1)
    if ttl_s:
        pipe.expire(key, ttl_s)


class RedisServingUserStore:
    """The serving side in Redis: an asyncio client, and the hot path's multiplexed
    connection (one round trip per request, shared by every request of the process)."""

    def __init__(self, client: AsyncRedis, hot: HotRedis, timeout_s: float) -> None:
        self.client = client
        self.hot = hot
        self.timeout_s = timeout_s

    async def live_version(self) -> str | None:
        raw = await self.client.get(keys.LIVE_VERSION)
        return _text(raw) if isinstance(raw, bytes | str) else None

    async def customer_state(self, version: str, customer_id: str) -> CustomerState:
        raw_vector, history, last = await self.hot.execute(
            [
                ("GET", keys.user_vector(version, customer_id)),
                ("ZREVRANGE", keys.history(customer_id), 0, -1),
                ("GET", keys.last_event(customer_id)),
            ]
        )
        return CustomerState(
            vector=decode(raw_vector),
            purchased=[a.decode() for a in history],
            last_event_id=last.decode() if last else None,
        )

    async def history_and_profile(
        self, version: str, customer_id: str
    ) -> tuple[list[tuple[str, float]], dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.profile(version, customer_id))
        pipe.zrevrange(keys.history(customer_id), 0, -1, withscores=True)
        counts, history = await asyncio.wait_for(pipe.execute(), timeout=self.timeout_s)
        return _history(history), _profile(counts)

    async def customers_with_vectors(self, version: str, limit: int, calls: int) -> list[str]:
        pattern, prefix, suffix = user_vector_pattern(version)
        found: dict[str, None] = {}  # SCAN may return a key twice; first seen order kept
        # Each node of a cluster holds its own keys: scanned one after the other.
        nodes: list[Any] = [None]
        if isinstance(self.client, AsyncRedisCluster):
            await self.client.initialize()  # the node list is learnt at the first command
            nodes = self.client.get_primaries()
        for node in nodes:
            cursor = 0
            while calls > 0 and len(found) < limit:
                calls -= 1
                scan = (
                    self.client.scan(cursor, match=pattern, count=SCAN_COUNT)
                    if node is None
                    else cast(AsyncRedisCluster, self.client).scan(
                        cursor, match=pattern, count=SCAN_COUNT, target_nodes=node
                    )
                )
                reply, names = await asyncio.wait_for(scan, timeout=self.timeout_s)
                # A cluster client answers a node's cursor as {node: cursor}.
                raw: Any = reply
                cursor = int(next(iter(raw.values())) if isinstance(raw, dict) else raw)
                for name in names:
                    key = _text(name)
                    found[key[len(prefix) : len(key) - len(suffix)]] = None
                if cursor == 0:
                    break
        return list(found)[:limit]

    async def put_item_vectors(self, version: str, vectors: Mapping[str, Vector]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for article_id, vector in vectors.items():
            pipe.set(keys.item_vector(version, article_id), encode(vector))
        await pipe.execute()
