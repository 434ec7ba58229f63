"""The user store role's contract: what every store behind `recsys.user_store.UserStore`
and `ServingUserStore` must do for the parts (the version pointers, a version's data,
reads, events applied once, dropping a version, erasing a customer), both sides reading
what the other wrote.

It runs against the embedded Valkey the suite starts (in a database of its own, emptied
before each test), against a three-master Valkey Cluster on loopback (the stores' cluster
clients, every key family spread over the nodes), and against another Redis-protocol
server when RECSYS_TEST_REDIS_URL names one (Redis, a managed service); that database is
emptied too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from recsys.apply import Target
from recsys.events import PURCHASE, Event
from recsys.settings import Settings
from recsys.stores import (
    AsyncRedis,
    HotRedis,
    SyncRedis,
    async_redis_client,
    hot_redis_client,
    redis_client,
)
from recsys.user_store import (
    Pointers,
    RedisServingUserStore,
    RedisUserStore,
    ServingUserStore,
    UserStore,
)

EXTERNAL_ENV = "RECSYS_TEST_REDIS_URL"
# The suite's other tests use database 0 of the embedded server.
CONTRACT_DB = 15
SERVERS = ["embedded", "cluster", *(["external"] if os.environ.get(EXTERNAL_ENV) else [])]


@dataclass
class Stores:
    url: str
    sync: UserStore
    client: SyncRedis
    cluster: bool = False

    def serving(self) -> tuple[ServingUserStore, HotRedis, AsyncRedis]:
        hot = hot_redis_client(self.url, 5.0, cluster=self.cluster)
        client = async_redis_client(self.url, 5.0, cluster=self.cluster)
        return RedisServingUserStore(client, hot, 5.0), hot, client


@pytest.fixture(params=SERVERS)
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Stores]:
    cluster = request.param == "cluster"
    if request.param == "external":
        url = os.environ[EXTERNAL_ENV]
    elif cluster:
        url = request.getfixturevalue("valkey_cluster").url
    else:
        assert settings.redis_url
        url = urlsplit(settings.redis_url)._replace(path=f"/{CONTRACT_DB}").geturl()
    client = redis_client(url, 5.0, cluster=cluster)
    client.flushdb()
    yield Stores(url, RedisUserStore(client), client, cluster)
    client.flushdb()
    client.close()


def _serve(stores: Stores, read: Callable[[ServingUserStore], Awaitable[Any]]) -> Any:
    """Run one coroutine of the serving side, on a store of its own, and close it."""

    async def run() -> Any:
        serving, hot, client = stores.serving()
        try:
            return await read(serving)
        finally:
            await hot.aclose()
            await client.aclose()

    return asyncio.run(run())


def _vectors(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_pointers_move_as_promotion_and_rollback_need(stores: Stores) -> None:
    store = stores.sync
    assert store.live_version() is None
    assert store.pointers() == Pointers(None, set(), [])
    store.add_candidate("v1")
    assert store.pointers() == Pointers(None, {"v1"}, [])
    store.make_live("v1")
    assert store.pointers() == Pointers("v1", set(), [])
    store.add_candidate("v2")
    store.make_live("v2")
    store.make_live("v2")  # again: nothing more in the history
    assert store.pointers() == Pointers("v2", set(), ["v1"])
    store.make_live("v3")
    assert store.pointers().history == ["v2", "v1"]
    assert store.pointers().named() == {"v1", "v2", "v3"}
    assert store.pop_previous() == "v2"
    store.forget_previous("v1")
    assert store.pop_previous() is None
    assert _serve(stores, lambda s: s.live_version()) == "v3"


def test_a_version_s_data_reads_back_on_both_sides(stores: Stores) -> None:
    store = stores.sync
    users, items = _vectors(3), _vectors(2, seed=1)
    store.write_vectors("v1", "user", np.array(["c1", "c2", "c3"], dtype=object), users)
    store.write_vectors("v1", "item", ["a1", "a2"], items)
    store.write_meta("v1", {"dim": 4, "user_norm_median": 1.5})
    store.write_profiles("v1", [("c1", {"purchases": 2, "first_ts": 10, "last_ts": 20})])
    written = store.write_histories([("c1", {"a1": 10, "a2": 20, "a3": 5})], max_items=2)
    assert written == 1

    got = store.user_vectors("v1", ["c2", "nobody", "c1"])
    np.testing.assert_array_equal(got[0], users[1])
    assert got[1] is None
    np.testing.assert_array_equal(got[2], users[0])
    assert store.user_vectors("v2", ["c1"]) == [None], "per version"
    assert store.user_vectors("v1", []) == []
    np.testing.assert_array_equal(store.item_vectors("v1", ["a2"])[0], items[1])
    assert store.meta("v1") == {"dim": "4", "user_norm_median": "1.5"}
    assert store.profile("v1", "c1") == {"purchases": "2", "first_ts": "10", "last_ts": "20"}
    assert store.history("c1") == [("a2", 20.0), ("a1", 10.0)], "newest max_items, newest first"
    # A later merge keeps the newest of old and new together.
    store.write_histories([("c1", {"a4": 15})], max_items=2)
    assert store.history("c1") == [("a2", 20.0), ("a4", 15.0)]

    state = _serve(stores, lambda s: s.customer_state("v1", "c1"))
    np.testing.assert_array_equal(state.vector, users[0])
    assert state.purchased == ["a2", "a4"]
    assert state.last_event_id is None
    history, profile = _serve(stores, lambda s: s.history_and_profile("v1", "c1"))
    assert (history, profile) == (store.history("c1"), store.profile("v1", "c1"))
    found = _serve(stores, lambda s: s.customers_with_vectors("v1", 10, 20))
    assert sorted(found) == ["c1", "c2", "c3"]
    assert len(_serve(stores, lambda s: s.customers_with_vectors("v1", 2, 20))) == 2
    placed = _vectors(1, seed=2)[0]
    _serve(stores, lambda s: s.put_item_vectors("v1", {"new": placed}))
    np.testing.assert_array_equal(store.item_vectors("v1", ["new"])[0], placed)


def test_an_event_is_applied_once_and_moves_the_customer_s_state(
    stores: Stores, settings: Settings
) -> None:
    store = stores.sync
    store.write_vectors("v1", "user", ["c1"], _vectors(1))
    store.write_vectors("v1", "item", ["a1"], _vectors(1, seed=3))
    store.write_meta("v1", {"dim": 4, "user_norm_median": 1.0})
    store.make_live("v1")
    before = store.user_vectors("v1", ["c1"])[0]
    applier = store.applier(settings)
    assert applier.active_versions() == [Target("v1", live=True)]
    ts = datetime(2026, 11, 1, tzinfo=UTC)
    event = Event(event_id="e1", event_type=PURCHASE, customer_id="c1", article_id="a1", ts=ts)
    received = int(ts.timestamp() * 1000)
    assert applier.apply(Target("v1", live=True), [event], [received]) == (1, 0)
    assert applier.apply(Target("v1", live=True), [event], [received]) == (0, 1)
    after = store.user_vectors("v1", ["c1"])[0]
    assert after is not None and before is not None and not np.allclose(after, before)
    assert store.history("c1") == [("a1", ts.timestamp())]
    assert store.profile("v1", "c1")["purchases"] == "1"
    state = _serve(stores, lambda s: s.customer_state("v1", "c1"))
    assert state.last_event_id == "e1" and state.purchased == ["a1"]


def test_dropping_a_version_takes_its_keys_and_pointers_and_nothing_else(
    stores: Stores,
) -> None:
    store = stores.sync
    for version in ("v1", "v2"):
        store.write_vectors(version, "user", ["c1", "c2"], _vectors(2))
        store.write_vectors(version, "item", ["a1"], _vectors(1))
        store.write_meta(version, {"dim": 4})
        store.write_profiles(version, [("c1", {"purchases": 1})])
    store.write_histories([("c1", {"a1": 1})], max_items=10)
    store.make_live("v1")
    store.make_live("v2")
    assert store.drop_version("v1") == 5  # two users, one item, the meta, one profile
    assert store.pointers() == Pointers("v2", set(), [])
    assert store.user_vectors("v1", ["c1", "c2"]) == [None, None]
    assert store.meta("v1") == {} and store.profile("v1", "c1") == {}
    assert all(v is not None for v in store.user_vectors("v2", ["c1", "c2"]))
    assert store.history("c1") == [("a1", 1.0)], "history is not a version's"


def test_erasing_a_customer_takes_every_key_of_theirs_and_keeps_the_record(
    stores: Stores,
) -> None:
    store = stores.sync
    for version in ("v1", "v2"):
        store.write_vectors(version, "user", ["gone", "kept"], _vectors(2))
        store.write_profiles(version, [("gone", {"purchases": 1}), ("kept", {"purchases": 1})])
    store.write_histories([("gone", {"a1": 1}), ("kept", {"a1": 1})], max_items=10)
    assert store.erase_customer("gone", ["v1", "v2"]) == 5
    assert store.user_vectors("v1", ["gone"]) == [None]
    assert store.user_vectors("v2", ["gone"]) == [None]
    assert store.history("gone") == [] and store.profile("v1", "gone") == {}
    assert store.user_vectors("v2", ["kept"])[0] is not None
    assert store.history("kept") == [("a1", 1.0)]
    assert store.erase_customer("gone", ["v1", "v2"]) == 0, "idempotent"
    assert {k.decode() for k in stores.client.scan_iter(match="*{gone}*")} == set()

    assert store.erased_at(["h-gone", "h-kept"]) == {}
    store.record_erasure("h-gone", 1_700_000_000.25)
    assert store.erased_at(["h-gone", "h-kept"]) == {"h-gone": 1_700_000_000.25}
    assert store.erased_at([]) == {}
