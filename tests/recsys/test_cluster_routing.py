"""Commands routed by slot on a real Valkey Cluster while a slot moves between nodes: the
hot path's connection follows ASK (the slot is migrating) and MOVED (it moved) and reads
the slot map anew; scripts queued per node (recsys.redis_routing) follow both too; reads
of many keys span every node."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from pydantic import ValidationError

from recsys.engines.valkey_cluster import ClusterNode, ValkeyCluster
from recsys.multiplexed_redis import ClusterMultiplexedRedis, key_slot
from recsys.redis_routing import get_many, per_node
from recsys.settings import Settings
from recsys.stores import redis_client

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def _node_id(client: redis.Redis) -> str:
    raw = client.execute_command("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _direct(cluster: ValkeyCluster, node: ClusterNode) -> redis.Redis:
    return redis.Redis.from_url(node.url(cluster.password), socket_timeout=5)


def test_slots_that_move_are_followed_by_every_client(valkey_cluster: ValkeyCluster) -> None:
    cluster = valkey_cluster
    key = f"rs:test:{{{uuid.uuid4().hex}}}"
    slot = key_slot(key.encode())
    source = cluster.node_of(key)
    target = next(n for n in cluster.nodes if n.port != source.port)
    sync = redis_client(cluster.url, 5.0, cluster=True)
    sync.set(key, "7")
    script = sync.register_script(INCR)
    hot = ClusterMultiplexedRedis(cluster.url, 2.0)
    src, dst = _direct(cluster, source), _direct(cluster, target)

    async def hot_get() -> bytes:
        return (await hot.execute([("GET", key), ("PING",)]))[0]

    async def scenario() -> None:
        try:
            assert await hot_get() == b"7"  # the slot map read, key on the source
            # Migrating: the key already on the target, the source answers ASK for it.
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(src))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(dst))
            src.execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                "AUTH", cluster.password, "KEYS", key,
            )  # fmt: skip
            assert await hot_get() == b"7"
            # The per-node scripts too: ASK from the source, then ASKING on the target.
            incr = [(key, lambda pipe: script(keys=[key], args=[1], client=pipe))]
            assert per_node(sync, incr) == [8]
            # Moved: every node says the target owns it; the source answers MOVED.
            for client in (dst, src):
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(dst))
            assert await hot_get() == b"8"
            assert hot._slots[slot] == ("127.0.0.1", target.port)
        finally:
            await hot.aclose()

    try:
        asyncio.run(scenario())
        # redis-py's cluster client still maps the slot to the source: the per-node
        # scripts go there, come back MOVED, and are sent again where the key is.
        assert sync.get_node_from_key(key).port == source.port
        replies = per_node(sync, [(key, lambda pipe: script(keys=[key], args=[5], client=pipe))])
        assert replies == [13]
        assert dst.get(key) == b"13"
        others = [f"rs:test:{{{uuid.uuid4().hex}}}" for _ in range(30)]
        for n, name in enumerate(others):
            sync.set(name, n)
        assert len({cluster.node_of(name).port for name in others}) == len(cluster.nodes)
        assert get_many(sync, [*others, "rs:test:{none}"]) == [
            *(str(n).encode() for n in range(30)),
            None,
        ]
    finally:
        # The slot back where the even split put it: other tests ask node_of afresh, but
        # leave the cluster as they found it.
        src.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(dst))
        dst.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(src))
        dst.execute_command(
            "MIGRATE", "127.0.0.1", source.port, "", 0, 5000,
            "AUTH", cluster.password, "KEYS", key,
        )  # fmt: skip
        for client in (src, dst):
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(src))
        for client in (src, dst, sync):
            client.close()


def test_a_cluster_needs_its_url() -> None:
    with pytest.raises(ValidationError, match="redis_cluster needs redis_url"):
        Settings.model_validate({"redis_cluster": True, "redis_url": None})
    assert Settings.model_validate({"redis_cluster": True, "redis_url": "redis://n1:6379/0"})
