"""Clients of the engines, created once per process from resolved endpoints.

Redis or Valkey is one server or a cluster (`RECSYS_REDIS_CLUSTER`): the same URL then
names any node, from which the clients learn the others. The hot path's multiplexed
connection has a cluster form of its own (recsys.multiplexed_redis)."""

from __future__ import annotations

from typing import TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from recsys.multiplexed_redis import ClusterMultiplexedRedis, MultiplexedRedis

SyncRedis: TypeAlias = redis.Redis | RedisCluster
AsyncRedis: TypeAlias = aioredis.Redis | AsyncRedisCluster
HotRedis: TypeAlias = MultiplexedRedis | ClusterMultiplexedRedis


def redis_client(url: str, timeout_s: float, *, cluster: bool = False) -> SyncRedis:
    if cluster:
        return RedisCluster.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
    )


def async_redis_client(url: str, timeout_s: float, *, cluster: bool = False) -> AsyncRedis:
    if cluster:
        return AsyncRedisCluster.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
    )


def hot_redis_client(url: str, timeout_s: float, *, cluster: bool = False) -> HotRedis:
    """The serving hot path's connection: one per process (one per node of a cluster)."""
    if cluster:
        return ClusterMultiplexedRedis(url, timeout_s)
    return MultiplexedRedis(url, timeout_s)
