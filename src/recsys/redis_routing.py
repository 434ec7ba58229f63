"""The same commands on one Redis or Valkey server or on a cluster (redis-py's clients).

Most commands need nothing: redis-py's cluster client routes a command by its key and
splits a non-transactional pipeline by node. What it does not do is done here, once:
- several keys read at once (MGET takes keys of one slot only in a cluster);
- scripts in a pipeline (its cluster pipeline refuses EVALSHA): queued on a plain
  pipeline per node, each node's in one round trip, a script the node has not seen
  loaded first; a command that a node redirects is sent again: after MOVED (its slot
  moved) once the slot map is read anew, after ASK (its slot is moving) to the node
  named, told ASKING first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterDownError, TryAgainError

from recsys.stores import SyncRedis

_ATTEMPTS = 3

Queue = Callable[[Pipeline], object]
_Target = tuple[ClusterNode, bool]  # the node, and whether to tell it ASKING first


def get_many(client: SyncRedis, names: Sequence[str | bytes]) -> list[Any]:
    """The values of the keys, in order (None where a key is missing)."""
    if not names:
        return []
    if isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        return list(pipe.execute())
    return list(client.mget(names))


def per_node(client: SyncRedis, calls: Sequence[tuple[str | bytes, Queue]]) -> list[Any]:
    """Each call queues commands of its key's slot on a pipeline (a script included);
    the replies of every call's commands, in the order queued, one round trip per node.
    A reply that is an error raises it."""
    if not isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for _key, queue in calls:
            queue(pipe)
        return list(pipe.execute())
    replies: dict[int, list[Any]] = {}
    # Where each call goes: its key's node, or the node an ASK named (told ASKING first).
    targets: dict[int, _Target] = {
        position: (client.get_node_from_key(key), False) for position, (key, _) in enumerate(calls)
    }
    for attempt in range(_ATTEMPTS):
        last = attempt == _ATTEMPTS - 1
        by_node: dict[str, list[int]] = defaultdict(list)
        for position, (node, _) in targets.items():
            by_node[node.name].append(position)
        retry: dict[int, _Target | None] = {}  # None: its key's node, once re-mapped
        for positions in by_node.values():
            node = targets[positions[0]][0]
            outcomes = _on_node(client, node, [(calls[p][1], targets[p][1]) for p in positions])
            for position, own in zip(positions, outcomes, strict=True):
                asked = next((o for o in own if type(o) is AskError), None)
                if asked is not None and not last:
                    retry[position] = (_node_at(client, asked.host, asked.port), True)
                elif any(_redirected(o) for o in own) and not last:
                    retry[position] = None
                else:
                    replies[position] = own
        if not retry:
            break
        if any(target is None for target in retry.values()):
            client.nodes_manager.initialize()  # the slots moved: read the map anew
        targets = {
            position: target or (client.get_node_from_key(calls[position][0]), False)
            for position, target in retry.items()
        }
    flat = [reply for position in range(len(calls)) for reply in replies[position]]
    for reply in flat:
        if isinstance(reply, Exception):
            raise reply
    return flat


def _on_node(
    client: RedisCluster, node: ClusterNode, queued: Sequence[tuple[Queue, bool]]
) -> list[list[Any]]:
    """Each call's replies from one node's pipeline; a call marked asking is preceded by
    ASKING (its slot is being migrated to this node), whose reply is left out."""
    connection: redis.Redis = client.get_redis_connection(node)
    pipe = connection.pipeline(transaction=False)
    spans: list[tuple[int, int]] = []
    for queue, asking in queued:
        if asking:
            pipe.execute_command("ASKING")
        start = len(pipe.command_stack)
        queue(pipe)
        spans.append((start, len(pipe.command_stack)))
    outcomes = pipe.execute(raise_on_error=False)
    return [outcomes[start:stop] for start, stop in spans]


def _node_at(client: RedisCluster, host: str, port: int) -> ClusterNode:
    node: ClusterNode | None = client.get_node(host=host, port=port)
    if node is None:  # a node the map does not know yet
        client.nodes_manager.initialize()
        node = client.get_node(host=host, port=port)
    if node is None:
        raise ConnectionError(f"Redis Cluster redirected to an unknown node {host}:{port}")
    return node


def _redirected(outcome: Any) -> bool:
    # redis-py parses MOVED and ASK (AskError, MovedError its subclass), TRYAGAIN and
    # CLUSTERDOWN into exceptions of their own.
    return isinstance(outcome, AskError | TryAgainError | ClusterDownError)
