"""Apply events to the user vectors of one model version, each event once.

An event's marker, the new vector, the last-applied event id and, for a purchase, the
history and the customer's purchase counts are written by one Lua script, so a replayed
or duplicated event never moves a vector twice. Every type moves the vector, by its
weight (`recsys.events.event_weights`); only purchases are history. The updater and the
promotion replay both go through here.

The EMA is computed here, in Python (the one function the replay evaluation uses too),
from the vector read before; the script writes only if the stored vector is still that
one. Two writers of one customer (the updater and a promotion replay on a candidate)
can therefore never lose each other's update: the loser sees a conflict, re-reads and
tries again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis
from redis.exceptions import RedisError

from recsys import keys
from recsys.events import Event, event_weights
from recsys.settings import Settings
from recsys.vectors import Vector, decode, encode
from stream.ema import ema_update

# KEYS: applied marker, user vector, history, last event, profile counts.
# ARGV: new vector bytes (empty: leave the vector), marker ttl s, article id, ts, event id,
#       max history, the vector the new one was computed from (empty: there was none),
#       '1' for a purchase (history and counts), '0' for a weaker signal, the history's
#       and last event's ttl s ('0': none).
# Returns 1 applied, 0 applied before (a duplicate), -1 the vector changed meanwhile.
APPLY_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[7] then
  return -1
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1])
end
local state_ttl = tonumber(ARGV[9])
if state_ttl > 0 then
  redis.call('SET', KEYS[4], ARGV[5], 'EX', state_ttl)
else
  redis.call('SET', KEYS[4], ARGV[5])
end
if ARGV[8] ~= '1' then
  return 1
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
if state_ttl > 0 then
  redis.call('EXPIRE', KEYS[3], state_ttl)
end
local ts = tonumber(ARGV[4])
redis.call('HINCRBY', KEYS[5], 'purchases', 1)
local first = redis.call('HGET', KEYS[5], 'first_ts')
if not first or ts < tonumber(first) then
  redis.call('HSET', KEYS[5], 'first_ts', ts)
end
local last = redis.call('HGET', KEYS[5], 'last_ts')
if not last or ts > tonumber(last) then
  redis.call('HSET', KEYS[5], 'last_ts', ts)
end
return 1
"""

APPLIED_MARKER_TTL_S = 14 * 24 * 3600  # longer than any replay window
CONFLICT_RETRIES = 20


class ApplyConflictError(RedisError):
    """Another writer kept changing a customer's vector; the batch is retried later."""


class EventApplier:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self._apply = client.register_script(APPLY_SCRIPT)
        self._weights = event_weights(settings)
        self._item_cache: dict[tuple[str, str], Vector] = {}
        self._norm_cache: dict[str, float] = {}

    def active_versions(self) -> list[str]:
        """The live version and every candidate being promoted."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.LIVE_VERSION)
        pipe.smembers(keys.CANDIDATE_VERSIONS)
        live, candidates = pipe.execute()
        versions = [live.decode()] if live else []
        versions += sorted(c.decode() for c in candidates if c.decode() not in versions)
        return versions

    def apply(self, version: str, events: Sequence[Event]) -> tuple[int, int]:
        """Apply events (in order) to version; return (applied, skipped as duplicates)."""
        flags = self.apply_each(version, events)
        return sum(flags), len(flags) - sum(flags)

    def apply_each(self, version: str, events: Sequence[Event]) -> list[bool]:
        """Apply events (in order) to version; per event, whether this call applied it
        (False: it had been applied before)."""
        flags: list[bool] = [False] * len(events)
        pending = list(range(len(events)))
        for _ in range(CONFLICT_RETRIES):
            outcomes = self._attempt(version, [events[i] for i in pending])
            for position, outcome in zip(pending, outcomes, strict=True):
                flags[position] = outcome is True
            # A conflict stops a customer's chain; their later events conflict too and
            # go again, in order, from a fresh read.
            pending = [p for p, o in zip(pending, outcomes, strict=True) if o is None]
            if not pending:
                return flags
        raise ApplyConflictError(f"{len(pending)} events kept conflicting; retrying the batch")

    def _attempt(self, version: str, events: Sequence[Event]) -> list[bool | None]:
        """One pass: per event True applied, False a duplicate, None a conflict."""
        # No duplicate check up front: the script checks each event's marker, and a
        # duplicate inside a customer's chain makes that customer's later events conflict,
        # so they go again from a fresh read (rare: redeliveries after a crash).
        customers = list(dict.fromkeys(e.customer_id for e in events))
        raws = self.client.mget([keys.user_vector(version, c) for c in customers])
        users: dict[str, Vector | None] = {
            c: decode(raw) for c, raw in zip(customers, raws, strict=True)
        }
        items = self._item_vectors(version, [e.article_id for e in events])
        default_norm = self._default_norm(version)

        pipe = self.client.pipeline(transaction=False)
        planned: list[int] = []  # positions in events, in the order of the scripts
        by_customer: dict[str, list[tuple[int, Event]]] = defaultdict(list)
        for position, event in enumerate(events):
            by_customer[event.customer_id].append((position, event))
        for customer, own_events in by_customer.items():
            vector = users[customer]
            # One customer's events are in order (keyed partition), so the chain is too.
            for position, event in own_events:
                before = vector
                item = items.get(event.article_id)
                weight = self._weights[event.event_type]
                # Weight 0: recorded as applied (and as the last event), vector untouched;
                # a customer without a vector gets none from it.
                new = b""
                if item is not None and weight > 0:
                    vector = ema_update(vector, item, self.settings.ema_rate, default_norm, weight)
                    new = encode(vector)
                self._apply(
                    keys=[
                        keys.applied_event(version, customer, event.event_id),
                        keys.user_vector(version, customer),
                        keys.history(customer),
                        keys.last_event(customer),
                        keys.profile(version, customer),
                    ],
                    args=[
                        new,
                        APPLIED_MARKER_TTL_S,
                        event.article_id,
                        int(event.ts.timestamp()),
                        event.event_id,
                        self.settings.history_max_items,
                        encode(before) if before is not None else b"",
                        "1" if event.is_purchase else "0",
                        self.settings.customer_state_ttl_s,
                    ],
                    client=pipe,
                )
                planned.append(position)
        outcomes: list[bool | None] = [False] * len(events)
        if planned:
            for position, result in zip(planned, pipe.execute(), strict=True):
                outcomes[position] = None if int(result) < 0 else bool(int(result))
        return outcomes

    def _item_vectors(self, version: str, article_ids: Sequence[str]) -> dict[str, Vector]:
        # A version's vectors stay as the batch wrote them (a content-placed article whose
        # metadata changes later is the exception this cache ignores), so each is fetched
        # once. A missing one is asked for again: a serving process writes it when it
        # places an article from the catalog topic (serve.catalog_feed).
        missing = [a for a in dict.fromkeys(article_ids) if (version, a) not in self._item_cache]
        if missing:
            raws = self.client.mget([keys.item_vector(version, a) for a in missing])
            for article_id, raw in zip(missing, raws, strict=True):
                vector = decode(raw)
                if vector is not None:
                    self._item_cache[(version, article_id)] = vector
        found = {a: self._item_cache.get((version, a)) for a in article_ids}
        return {a: v for a, v in found.items() if v is not None}

    def _default_norm(self, version: str) -> float:
        if version not in self._norm_cache:
            raw = self.client.hget(keys.model_meta(version), "user_norm_median")
            self._norm_cache[version] = float(raw) if raw else 1.0
        return self._norm_cache[version]
