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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, cast

from redis.exceptions import NoScriptError, ResponseError

from recsys import keys
from recsys.experiments.definitions import Experiment
from recsys.multiplexed_redis import Command, command_key
from recsys.redis_routing import per_node
from recsys.settings import Settings
from recsys.stores import SyncRedis

# Per customer, the ledger keeps at most this many impressions (the latest in the
# window) and this many purchase outcomes: its memory grows with customers, not with
# traffic, and a client polling /recommend cannot make a purchase's script slow.
MAX_SEEN: Final = 20
MAX_OUTCOMES: Final = 100
# An event's outcome is kept twice the window: a redelivery after it cannot be credited
# again, because every impression it could match has expired by then.
OUTCOME_WINDOWS: Final = 2

AttributedBy = Literal["recommendation", "customer"]

# One impression, atomically: stored in the customer's hash, indexed by time shown, both
# pruned to the window and MAX_SEEN. An impression is the string
# "<converted 0|1>\n<experiment>\n<variant>\n<shown at>\n<article>\n...".
# KEYS: 1 the customer's impressions, 2 their recommendation ids by time shown.
# ARGV: 1 the recommendation id, 2 the impression, 3 shown at, 4 '(' and the window's
#       start, 5 MAX_SEEN, 6 the window (s).
_IMPRESSION_LUA: Final = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local extra = redis.call('ZCARD', KEYS[2]) - #gone - tonumber(ARGV[5])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], #gone, #gone + extra - 1)) do
    gone[#gone + 1] = id
  end
end
if #gone > 0 then
  redis.call('HDEL', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return #gone
"""
_IMPRESSION_SHA: Final = hashlib.sha1(_IMPRESSION_LUA.encode()).hexdigest()

# One atomic step per purchase event in the customer's slot (docs/experiments.md,
# "Attribution"): which impression it is credited to, and whether it converted it. The
# counters live in the experiment's own slot, so the count is a second step (_COUNT_LUA).
# KEYS: 1 the customer's purchase outcomes, 2 their recommendation ids by time shown,
#       3 their impressions.
# ARGV: 1 the event id, 2 unused, 3 the article, 4 the recommendation id or '', 5 now
#       (unix s), 6 the window (s), 7 the outcomes' TTL, 8 MAX_OUTCOMES.
# Returns {1 first time | 0 a retry, outcome}: outcome is '' (credited to none) or
# "<experiment>\n<variant>\n<recommendation id>\n<by>\n<converted 0|1>".
_ATTRIBUTE_LUA: Final = """
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done then return {0, string.match(done, '^[^\\n]*\\n(.*)$')} end
local since = tonumber(ARGV[5]) - tonumber(ARGV[6])

-- The impression's fields and text if it is in the window and showed the article.
local function showed(rec_id)
  local rec = redis.call('HGET', KEYS[3], rec_id)
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
  local converted = '0'
  if f[1] == '0' then
    -- The impression's first purchase: it converted.
    redis.call('HSET', KEYS[3], rec_id, '1' .. string.sub(rec, 2))
    converted = '1'
  end
  outcome = f[2] .. '\\n' .. f[3] .. '\\n' .. rec_id .. '\\n' .. by .. '\\n' .. converted
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5] .. '\\n' .. outcome)
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[8]) then
  -- Forget the oldest outcome: a redelivery comes before a hundred newer purchases.
  local all = redis.call('HGETALL', KEYS[1])
  local oldest, oldest_at = nil, nil
  for i = 1, #all, 2 do
    local at = tonumber(string.match(all[i + 1], '^[^\\n]*'))
    if oldest_at == nil or at < oldest_at then oldest, oldest_at = all[i], at end
  end
  redis.call('HDEL', KEYS[1], oldest)
end
redis.call('EXPIRE', KEYS[1], ARGV[7])
return {1, outcome}
"""
_ATTRIBUTE_SHA: Final = hashlib.sha1(_ATTRIBUTE_LUA.encode()).hexdigest()

# The counters of one attributed purchase, each event counted once: the events counted
# are remembered for as long as a redelivery may come (the outcomes' TTL).
# KEYS: 1 the experiment's counters, 2 the events it counted (the same slot).
# ARGV: 1 the event id, 2 the variant, 3 '1' if it converted its impression, 4 now
#       (unix s), 5 how long an event is remembered (s).
_COUNT_LUA: Final = """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[4]) - tonumber(ARGV[5])))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'p:' .. ARGV[2], 1)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'c:' .. ARGV[2], 1) end
return 1
"""
_COUNT_SHA: Final = hashlib.sha1(_COUNT_LUA.encode()).hexdigest()


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
    converted: bool = False  # the impression's first purchase


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

    def _impression_args(self, impression: Impression, at: float) -> list[str | int]:
        customer = impression.customer_id
        text = "\n".join(
            ("0", impression.experiment, impression.variant, f"{at:.6f}", *impression.article_ids)
        )
        return [
            2,
            keys.experiment_impressions(customer),
            keys.experiment_seen(customer),
            impression.recommendation_id,
            text,
            f"{at:.6f}",
            f"({at - self.window_s:.6f}",
            MAX_SEEN,
            self.window_s,
        ]

    def impression_commands(
        self, impression: Impression, now: float | None = None
    ) -> list[Command]:
        """The writes of one impression: the impression in the customer's ledger (one
        script, pruning it to the window and MAX_SEEN), the variant's counter and its
        distinct customers. Sent together, they are one round trip."""
        at = time.time() if now is None else now
        return [
            ("EVALSHA", _IMPRESSION_SHA, *self._impression_args(impression, at)),
            (
                "HINCRBY",
                keys.experiment_counts(impression.experiment),
                f"i:{impression.variant}",
                1,
            ),
            ("PFADD", keys.experiment_exposed(impression.experiment, impression.variant),
             impression.customer_id),
        ]  # fmt: skip

    async def record_impression(
        self, client: Executor, impression: Impression, now: float | None = None
    ) -> None:
        """Raises what the connection raises (RedisError, TimeoutError, ConnectionError):
        the caller decides whether a response goes out unrecorded."""
        at = time.time() if now is None else now
        commands = self.impression_commands(impression, at)
        try:
            await client.execute(commands)
        except ResponseError as exc:
            if not _no_script(exc):
                raise
            # The counters went through; only the script was unknown to the server.
            args = self._impression_args(impression, at)
            await client.execute([("EVAL", _IMPRESSION_LUA, *args)])

    def record_impression_sync(
        self, client: SyncRedis, impression: Impression, now: float | None = None
    ) -> None:
        client.script_load(_IMPRESSION_LUA)  # a flushed script cache must not fail it
        _pipeline(client, self.impression_commands(impression, now))

    # --- purchases: one atomic script per event ---------------------------------------

    def _attribute_args(self, purchase: Purchase, at: float) -> list[str | int]:
        customer = purchase.customer_id
        return [
            3,
            keys.experiment_attributed(customer),
            keys.experiment_seen(customer),
            keys.experiment_impressions(customer),
            purchase.event_id,
            "",
            purchase.article_id,
            purchase.recommendation_id or "",
            f"{at:.6f}",
            self.window_s,
            OUTCOME_WINDOWS * self.window_s,
            MAX_OUTCOMES,
        ]

    def _count_args(self, event_id: str, credit: Attribution, at: float) -> list[str | int]:
        counts = keys.experiment_counts(credit.experiment)
        return [
            2,
            counts,
            keys.experiment_counted(credit.experiment),
            event_id,
            credit.variant,
            "1" if credit.converted else "0",
            f"{at:.6f}",
            OUTCOME_WINDOWS * self.window_s,
        ]

    async def attribute(
        self, client: Executor, purchase: Purchase, now: float | None = None
    ) -> Attribution | None:
        """The impression credited with this purchase (None: no impression of the customer
        in the window showed the article). Idempotent per event id: a retry returns the
        first outcome with `first=False` and counts nothing again.

        Two steps, the customer's slot then the experiment's (a cluster keeps them on
        different nodes): a retry after the first step completes the count, and the
        second counts each event once."""
        at = time.time() if now is None else now
        args = self._attribute_args(purchase, at)
        reply = await _evaluated(client, _ATTRIBUTE_SHA, _ATTRIBUTE_LUA, args)
        credit = _attribution(reply)
        if credit is not None:
            count = self._count_args(purchase.event_id, credit, at)
            await _evaluated(client, _COUNT_SHA, _COUNT_LUA, count)
        return credit

    def attribute_sync(
        self, client: SyncRedis, purchase: Purchase, now: float | None = None
    ) -> Attribution | None:
        return self.attribute_all_sync(client, [purchase], now)[0]

    def attribute_all_sync(
        self, client: SyncRedis, purchases: Sequence[Purchase], now: float | None = None
    ) -> list[Attribution | None]:
        """attribute for a batch of purchases (the updater's), one round trip per node
        for each step."""
        if not purchases:
            return []
        at = time.time() if now is None else now
        # A flushed script cache must not fail the batch (on every node of a cluster).
        client.script_load(_ATTRIBUTE_LUA)
        client.script_load(_COUNT_LUA)
        replies = _pipeline(
            client,
            [("EVALSHA", _ATTRIBUTE_SHA, *self._attribute_args(p, at)) for p in purchases],
        )
        credits = [_attribution(reply) for reply in replies]
        counts = [
            ("EVALSHA", _COUNT_SHA, *self._count_args(p.event_id, c, at))
            for p, c in zip(purchases, credits, strict=True)
            if c is not None
        ]
        _pipeline(client, counts)
        return credits

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

    def counts_sync(self, client: SyncRedis, experiment: Experiment) -> dict[str, VariantCounts]:
        return self.parse_counts(experiment, _pipeline(client, self.counts_commands(experiment)))

    @staticmethod
    def reset(client: SyncRedis, experiment: Experiment) -> None:
        """Deletes the experiment's counters (its impressions expire with the window)."""
        client.delete(
            keys.experiment_counts(experiment.name),
            keys.experiment_counted(experiment.name),
            *(keys.experiment_exposed(experiment.name, v.name) for v in experiment.variants),
        )


def _pipeline(client: SyncRedis, commands: Sequence[Command]) -> list[Any]:
    """The commands' replies, one round trip per node (scripts included)."""
    return per_node(client, [(_routing_key(c), _queued(c)) for c in commands])


def _routing_key(command: Command) -> bytes:
    return command_key(command) or b""


def _queued(command: Command) -> Callable[[Any], object]:
    return lambda pipe: pipe.execute_command(*command)


async def _evaluated(client: Executor, sha: str, lua: str, args: Sequence[str | int]) -> Any:
    """The script's reply, sent as EVAL where the server does not know it yet."""
    try:
        return (await client.execute([("EVALSHA", sha, *args)]))[0]
    except ResponseError as exc:
        if not _no_script(exc):
            raise
        return (await client.execute([("EVAL", lua, *args)]))[0]


def _no_script(exc: ResponseError) -> bool:
    # redis-py raises its subclass; the multiplexed connection a plain ResponseError.
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def _attribution(reply: Sequence[Any]) -> Attribution | None:
    first, outcome = int(reply[0]), reply[1]
    text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if not text:
        return None
    # An outcome stored before conversions were part of it has four fields.
    experiment, variant, rec_id, by, *converted = text.split("\n")
    return Attribution(
        experiment, variant, rec_id, cast(AttributedBy, by), first == 1, converted == ["1"]
    )
