"""The experiment ledger in Redis: every recommendation shown in an experiment, the
purchases credited to it (each event once), and the counters the report reads.

Each operation is built once as Redis commands and parsed once; it runs on the serving
hot path's connection (anything with `async execute(commands)`, such as
`recsys.multiplexed_redis.MultiplexedRedis`) or on a redis-py client (the metrics
collector, tools, tests).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, cast

import redis
from redis.exceptions import NoScriptError, ResponseError

from recsys import keys
from recsys.experiments.definitions import Experiment
from recsys.multiplexed_redis import Command
from recsys.settings import Settings

# The attribution scan reads at most this many of a customer's latest impressions, so a
# client polling /recommend cannot make a purchase's script slow.
MAX_SEEN: Final = 100
# An event's outcome is kept twice the window: a redelivery after it cannot be credited
# again, because every impression it could match has expired by then.
MARKER_WINDOWS: Final = 2

AttributedBy = Literal["recommendation", "customer"]

# One atomic step per purchase event (docs/experiments.md, "Attribution"). An impression
# is the string "<converted 0|1>\n<experiment>\n<variant>\n<shown at>\n<article>\n...".
# KEYS: 1 the event's outcome marker, 2 the customer's impressions by time shown.
# ARGV: 1 the customer's impression key prefix, 2 the counters key prefix, 3 the article,
#       4 the recommendation id or '', 5 now (unix s), 6 the window (s), 7 the marker TTL.
_ATTRIBUTE_LUA: Final = """
local done = redis.call('GET', KEYS[1])
if done then return {0, done} end
local since = tonumber(ARGV[5]) - tonumber(ARGV[6])

-- The impression's fields and text if it is in the window and showed the article.
local function showed(rec_id)
  local rec = redis.call('GET', ARGV[1] .. rec_id)
  if not rec then return nil end
  local f = {}
  for part in string.gmatch(rec, '[^\\n]+') do f[#f + 1] = part end
  if tonumber(f[4]) < since then return nil end
  for i = 5, #f do
    if f[i] == ARGV[3] then return f, rec end
  end
  return nil
end

local by, rec_id, f, rec = '', '', nil, nil
if ARGV[4] ~= '' then
  f, rec = showed(ARGV[4])
  if f then by, rec_id = 'recommendation', ARGV[4] end
end
if not f then
  -- The customer's most recent impression in the window that showed the article.
  local ids = redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', string.format('%.6f', since))
  for _, id in ipairs(ids) do
    f, rec = showed(id)
    if f then
      by, rec_id = 'customer', id
      break
    end
  end
end
local outcome = ''
if f then
  local counts = ARGV[2] .. f[2]
  redis.call('HINCRBY', counts, 'p:' .. f[3], 1)
  if f[1] == '0' then
    -- The impression's first purchase: it converted.
    redis.call('SET', ARGV[1] .. rec_id, '1' .. string.sub(rec, 2), 'KEEPTTL')
    redis.call('HINCRBY', counts, 'c:' .. f[3], 1)
  end
  outcome = f[2] .. '\\n' .. f[3] .. '\\n' .. rec_id .. '\\n' .. by
end
redis.call('SET', KEYS[1], outcome, 'EX', ARGV[7])
return {1, outcome}
"""
_ATTRIBUTE_SHA: Final = hashlib.sha1(_ATTRIBUTE_LUA.encode()).hexdigest()


class Executor(Protocol):
    """A connection that sends commands in one write and returns their replies in order."""

    async def execute(self, commands: Sequence[Command]) -> list[Any]: ...


def new_recommendation_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Impression:
    """One recommendation response of an experiment: who saw which articles, in which arm."""

    recommendation_id: str
    experiment: str
    variant: str
    customer_id: str
    article_ids: Sequence[str]


@dataclass(frozen=True)
class Purchase:
    event_id: str
    customer_id: str
    article_id: str
    recommendation_id: str | None = None  # the one the client says led to it, if any


@dataclass(frozen=True)
class Attribution:
    """The impression a purchase was credited to."""

    experiment: str
    variant: str
    recommendation_id: str
    by: AttributedBy  # the recommendation id the event named, or the customer's latest
    first: bool  # False: this event was attributed before (a retry); it counted once


@dataclass(frozen=True)
class VariantCounts:
    impressions: int = 0
    conversions: int = 0  # impressions after which at least one shown article was bought
    purchases: int = 0  # every attributed purchase
    customers: int = 0  # distinct customers shown the variant (HyperLogLog, ~0.8% error)


class Ledger:
    """Impressions kept for the attribution window; counters kept until deleted."""

    def __init__(self, window_s: int) -> None:
        if window_s <= 0:
            raise ValueError("the attribution window must be positive")
        self.window_s = window_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        return cls(settings.attribution_window_s)

    # --- impressions: the /recommend hot path, one pipelined write --------------------

    def impression_commands(
        self, impression: Impression, now: float | None = None
    ) -> list[Command]:
        """The writes of one impression: the impression itself, the customer's index of
        impressions (pruned to the window and MAX_SEEN), the variant's counter and its
        distinct customers. Sent together, they are one round trip."""
        at = time.time() if now is None else now
        customer, rec_id = impression.customer_id, impression.recommendation_id
        text = "\n".join(
            ("0", impression.experiment, impression.variant, f"{at:.6f}", *impression.article_ids)
        )
        seen = keys.experiment_seen(customer)
        return [
            ("SET", keys.experiment_impression(customer, rec_id), text, "EX", self.window_s),
            ("ZADD", seen, f"{at:.6f}", rec_id),
            ("ZREMRANGEBYSCORE", seen, "-inf", f"({at - self.window_s:.6f}"),
            ("ZREMRANGEBYRANK", seen, 0, -(MAX_SEEN + 1)),
            ("EXPIRE", seen, self.window_s),
            (
                "HINCRBY",
                keys.experiment_counts(impression.experiment),
                f"i:{impression.variant}",
                1,
            ),
            ("PFADD", keys.experiment_exposed(impression.experiment, impression.variant), customer),
        ]

    async def record_impression(
        self, client: Executor, impression: Impression, now: float | None = None
    ) -> None:
        """Raises what the connection raises (RedisError, TimeoutError, ConnectionError):
        the caller decides whether a response goes out unrecorded."""
        await client.execute(self.impression_commands(impression, now))

    def record_impression_sync(
        self, client: redis.Redis, impression: Impression, now: float | None = None
    ) -> None:
        _pipeline(client, self.impression_commands(impression, now))

    # --- purchases: one atomic script per event ---------------------------------------

    def _attribute_args(self, purchase: Purchase, now: float | None) -> list[str | int]:
        at = time.time() if now is None else now
        customer = purchase.customer_id
        return [
            2,
            keys.experiment_attributed(customer, purchase.event_id),
            keys.experiment_seen(customer),
            keys.experiment_impression(customer, ""),
            keys.experiment_counts(""),
            purchase.article_id,
            purchase.recommendation_id or "",
            f"{at:.6f}",
            self.window_s,
            MARKER_WINDOWS * self.window_s,
        ]

    async def attribute(
        self, client: Executor, purchase: Purchase, now: float | None = None
    ) -> Attribution | None:
        """The impression credited with this purchase (None: no impression of the customer
        in the window showed the article). Idempotent per event id: a retry returns the
        first outcome with `first=False` and counts nothing again."""
        args = self._attribute_args(purchase, now)
        try:
            reply = await client.execute([("EVALSHA", _ATTRIBUTE_SHA, *args)])
        except ResponseError as exc:
            if not _no_script(exc):
                raise
            reply = await client.execute([("EVAL", _ATTRIBUTE_LUA, *args)])
        return _attribution(reply[0])

    def attribute_sync(
        self, client: redis.Redis, purchase: Purchase, now: float | None = None
    ) -> Attribution | None:
        args = self._attribute_args(purchase, now)
        try:
            reply = client.execute_command("EVALSHA", _ATTRIBUTE_SHA, *args)
        except ResponseError as exc:
            if not _no_script(exc):
                raise
            reply = client.execute_command("EVAL", _ATTRIBUTE_LUA, *args)
        return _attribution(reply)

    def attribute_all_sync(
        self, client: redis.Redis, purchases: Sequence[Purchase], now: float | None = None
    ) -> list[Attribution | None]:
        """attribute_sync for a batch of purchases (the updater's), in one round trip."""
        if not purchases:
            return []
        client.script_load(_ATTRIBUTE_LUA)  # a flushed script cache must not fail the batch
        replies = _pipeline(
            client,
            [("EVALSHA", _ATTRIBUTE_SHA, *self._attribute_args(p, now)) for p in purchases],
        )
        return [_attribution(reply) for reply in replies]

    # --- counters: what the report and the metrics read -------------------------------

    @staticmethod
    def counts_commands(experiment: Experiment) -> list[Command]:
        fields = [f"{kind}:{v.name}" for v in experiment.variants for kind in "icp"]
        return [
            ("HMGET", keys.experiment_counts(experiment.name), *fields),
            *(
                ("PFCOUNT", keys.experiment_exposed(experiment.name, v.name))
                for v in experiment.variants
            ),
        ]

    @staticmethod
    def parse_counts(experiment: Experiment, replies: Sequence[Any]) -> dict[str, VariantCounts]:
        values = [int(x or 0) for x in replies[0]]
        return {
            v.name: VariantCounts(
                impressions=values[3 * n],
                conversions=values[3 * n + 1],
                purchases=values[3 * n + 2],
                customers=int(replies[1 + n]),
            )
            for n, v in enumerate(experiment.variants)
        }

    async def counts(self, client: Executor, experiment: Experiment) -> dict[str, VariantCounts]:
        """Every variant's counters, in the experiment's order, in one round trip."""
        replies = await client.execute(self.counts_commands(experiment))
        return self.parse_counts(experiment, replies)

    def counts_sync(self, client: redis.Redis, experiment: Experiment) -> dict[str, VariantCounts]:
        return self.parse_counts(experiment, _pipeline(client, self.counts_commands(experiment)))

    @staticmethod
    def reset(client: redis.Redis, experiment: Experiment) -> None:
        """Deletes the experiment's counters (its impressions expire with the window)."""
        client.delete(
            keys.experiment_counts(experiment.name),
            *(keys.experiment_exposed(experiment.name, v.name) for v in experiment.variants),
        )


def _pipeline(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    replies: list[Any] = pipe.execute()
    return replies


def _no_script(exc: ResponseError) -> bool:
    # redis-py raises its subclass; the multiplexed connection a plain ResponseError.
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def _attribution(reply: Sequence[Any]) -> Attribution | None:
    first, outcome = int(reply[0]), reply[1]
    text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if not text:
        return None
    experiment, variant, rec_id, by = text.split("\n")
    return Attribution(experiment, variant, rec_id, cast(AttributedBy, by), first == 1)
