"""The same commands on one Redis or Valkey server or on a cluster (redis-py's clients).

Most commands need nothing: redis-py's cluster client routes a command by its key and
splits a non-transactional pipeline by node. What it does not do is done here, once:
- several keys read at once (MGET takes keys of one slot only in a cluster);
- scripts in a pipeline (its cluster pipeline refuses EVALSHA): queued on a plain
  pipeline per node, each node's in one round trip, a script the node has not seen
  loaded first, and a command that a node redirects (its slot moved) sent again once
  the slot map is read anew.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, TryAgainError

from recsys.stores import SyncRedis

_ATTEMPTS = 3

Queue = Callable[[Pipeline], object]


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
    pending = list(range(len(calls)))
    for attempt in range(_ATTEMPTS):
        by_node: dict[str, list[int]] = defaultdict(list)
        nodes = {}
        for position in pending:
            node = client.get_node_from_key(calls[position][0])
            by_node[node.name].append(position)
            nodes[node.name] = node
        retry: list[int] = []
        for name, positions in by_node.items():
            connection: redis.Redis = client.get_redis_connection(nodes[name])
            pipe = connection.pipeline(transaction=False)
            sizes = []
            for position in positions:
                before = len(pipe.command_stack)
                calls[position][1](pipe)
                sizes.append(len(pipe.command_stack) - before)
            outcomes = pipe.execute(raise_on_error=False)
            start = 0
            for position, size in zip(positions, sizes, strict=True):
                own = outcomes[start : start + size]
                start += size
                if any(_redirected(o) for o in own) and attempt < _ATTEMPTS - 1:
                    retry.append(position)
                else:
                    replies[position] = own
        if not retry:
            break
        client.nodes_manager.initialize()  # the slots moved: read the map anew
        pending = retry
    flat = [reply for position in range(len(calls)) for reply in replies[position]]
    for reply in flat:
        if isinstance(reply, Exception):
            raise reply
    return flat


def _redirected(outcome: Any) -> bool:
    # redis-py parses MOVED and ASK (AskError, MovedError its subclass), TRYAGAIN and
    # CLUSTERDOWN into exceptions of their own.
    return isinstance(outcome, AskError | TryAgainError | ClusterDownError)
