"""Apply purchase events to the user vectors of one model version, each event once.

An event's marker, the new vector, the history, the last-applied event id and the
customer's purchase counts are written by one Lua script, so a replayed or duplicated
event never moves a vector twice. The updater and the promotion replay both go through
here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis

from recsys import keys
from recsys.events import Event
from recsys.settings import Settings
from recsys.vectors import Vector, decode, encode
from stream.ema import ema_update

# KEYS: applied marker, user vector, history, last event, profile counts.
# ARGV: vector bytes (empty: leave the vector), marker ttl s, article id, ts, event id, max history.
APPLY_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
redis.call('SET', KEYS[4], ARGV[5])
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


class EventApplier:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self._apply = client.register_script(APPLY_SCRIPT)
        self._item_cache: dict[tuple[str, str], Vector | None] = {}
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
        customers = list(dict.fromkeys(e.customer_id for e in events))
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.exists(keys.applied_event(version, event.customer_id, event.event_id))
        for customer in customers:
            pipe.get(keys.user_vector(version, customer))
        results = pipe.execute()
        already = results[: len(events)]
        users: dict[str, Vector | None] = {
            c: decode(raw) for c, raw in zip(customers, results[len(events) :], strict=True)
        }
        items = self._item_vectors(version, [e.article_id for e in events])
        default_norm = self._default_norm(version)

        pipe = self.client.pipeline(transaction=False)
        planned = 0
        by_customer: dict[str, list[Event]] = defaultdict(list)
        for event, seen in zip(events, already, strict=True):
            if not seen:
                by_customer[event.customer_id].append(event)
        for customer, own_events in by_customer.items():
            vector = users[customer]
            # One customer's events are in order (keyed partition), so the chain is too.
            for event in own_events:
                item = items.get(event.article_id)
                if item is not None:
                    vector = ema_update(vector, item, self.settings.ema_rate, default_norm)
                self._apply(
                    keys=[
                        keys.applied_event(version, customer, event.event_id),
                        keys.user_vector(version, customer),
                        keys.history(customer),
                        keys.last_event(customer),
                        keys.profile(version, customer),
                    ],
                    args=[
                        encode(vector) if item is not None and vector is not None else b"",
                        APPLIED_MARKER_TTL_S,
                        event.article_id,
                        int(event.ts.timestamp()),
                        event.event_id,
                        self.settings.history_max_items,
                    ],
                    client=pipe,
                )
                planned += 1
        applied = sum(int(r) for r in pipe.execute()) if planned else 0
        return applied, len(events) - applied

    def _item_vectors(self, version: str, article_ids: Sequence[str]) -> dict[str, Vector]:
        # Item vectors never change within a version, so they are fetched once each.
        missing = [a for a in dict.fromkeys(article_ids) if (version, a) not in self._item_cache]
        if missing:
            raws = self.client.mget([keys.item_vector(version, a) for a in missing])
            for article_id, raw in zip(missing, raws, strict=True):
                self._item_cache[(version, article_id)] = decode(raw)
        found = {a: self._item_cache[(version, a)] for a in article_ids}
        return {a: v for a, v in found.items() if v is not None}

    def _default_norm(self, version: str) -> float:
        if version not in self._norm_cache:
            raw = self.client.hget(keys.model_meta(version), "user_norm_median")
            self._norm_cache[version] = float(raw) if raw else 1.0
        return self._norm_cache[version]
