"""Rate limits that every API process shares: GCRA (the generic cell rate algorithm) in
one Lua script in Redis, one round trip on the process's multiplexed connection.

GCRA keeps one number per caller, the time its next request is due at the sustained
rate (its "theoretical arrival time"); a request may go when that time is less than
burst - 1 intervals ahead of now. One key, no counters to reset, no window edges where
twice the rate gets through. The clock is the Redis server's (TIME), so workers on
different hosts agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from redis.exceptions import ResponseError

from recsys import keys
from recsys.stores import HotRedis

# KEYS[1]: the caller's state. ARGV[1]: microseconds between requests at the sustained
# rate; ARGV[2]: the burst (requests that may come at once). Returns 0 when the request
# may go (and counts it), else the microseconds until one may. Numbers are written with
# %.0f: Lua's tostring would turn microseconds since 1970 into 1.7e+15.
GCRA_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
tat = tat + interval
local ttl_ms = math.ceil((tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl_ms))
return 0
"""
GCRA_SHA: Final = hashlib.sha1(GCRA_LUA.encode()).hexdigest()


@dataclass(frozen=True)
class Limit:
    """Requests per second sustained, and how many may come at once (0 per second:
    no limit)."""

    per_s: float
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_s <= 0


async def acquire(client: HotRedis, subject: str, limit: Limit) -> float:
    """0 when the subject's request may go now (it is counted), else the seconds until
    one may. Raises what the connection raises when Redis does not answer."""
    args = (1, keys.rate_limit(subject), f"{1e6 / limit.per_s:.3f}", limit.burst)
    try:
        reply = await client.call("EVALSHA", GCRA_SHA, *args)
    except ResponseError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
        # Redis restarted or its script cache was flushed: the body loads it again.
        reply = await client.call("EVAL", GCRA_LUA, *args)
    return int(reply) / 1e6
