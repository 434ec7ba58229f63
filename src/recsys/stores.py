"""Clients of the engines, created once per process from resolved endpoints."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
    )


def async_redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
    )
