"""Apply events to the user vectors of one model version, each event once.

Whether an event was applied, the new vector, the last-applied event id and, for a
purchase, the history and the customer's purchase counts are read and written by one Lua
script, so a replayed or duplicated event never moves a vector twice. Every type moves
the vector, by its weight (`recsys.events.event_weights`); only purchases are history.
The updater and the promotion replay both go through here.

What a version has applied is one short string per customer, bounded whatever the
traffic (docs/scale.md, "Redis"): a *floor*, a broker time at or before which every
event of the customer counts as applied, and the latest `applied_events_kept` events
above it (8 bytes of broker time and 8 of a hash of the event id each), in time order.
Applying one more drops the oldest remembered event and raises the floor to its time
(never to a millisecond a kept event shares: events stamped alike stay remembered).
The time is the message's broker timestamp (the archive keeps it as `received_at`), so
the rule holds where offsets do not: a broker that restarts its offsets at zero, a
customer moved to another partition, a promotion replaying archived events beside the
updater. An event counts as applied twice only if it arrives after `applied_events_kept`
later-stamped events of the same customer were applied; a customer's events come in order
on their partition, so that needs a customer moved while a backlog of theirs was waiting.
A candidate version is being replayed, so its strings keep every event until promotion
trims them (`trim_applied`): a replay of older events beside the updater's newer ones
stays exact.

The new vector is computed here, in Python, by the EMA from the vector read before, or
by fold-in from the customer's purchase history (recsys.fold_in; the replay evaluation
runs the same functions), whichever the version is served with (recsys.online_update:
under RECSYS_ONLINE_UPDATE=auto, the batch's choice for it); the script writes only
if the stored vector is still the one read. Two writers of one customer (the updater and
a promotion replay on a candidate) can therefore never lose each other's update: the
loser sees a conflict, re-reads and tries again.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.commands.core import Script
from redis.exceptions import RedisError
from redis.typing import EncodableT

from recsys import keys
from recsys.ema import ema_update
from recsys.events import Event, event_weights
from recsys.fold_in import FoldInModel, Recency
from recsys.online_update import OnlineUpdate, resolve
from recsys.redis_routing import get_many, per_node
from recsys.settings import Settings
from recsys.stores import SyncRedis
from recsys.vectors import Vector, decode, encode

# The applied-event string: an 8-byte floor, then 16-byte records (8-byte broker time in
# milliseconds, big-endian; 8-byte hash of the event id), oldest first.
FLOOR_BYTES = 8
RECORD_BYTES = 16

# Lua shared by the scripts below: read and write the applied-event string.
_APPLIED_LUA = """
local function ms_at(s, i)
  local a, b, c, d, e, f, g, h = string.byte(s, i, i + 7)
  return ((((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f) * 256 + g) * 256 + h
end
local function ms_bytes(n)
  local out = {}
  for i = 8, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end
-- 1: at or below the floor, or remembered; 0: not applied.
local function applied(state, at, id)
  if #state < 8 then return 0 end
  if at <= ms_at(state, 1) then return 1 end
  for i = 9, #state - 15, 16 do
    if string.sub(state, i + 8, i + 15) == id then return 1 end
  end
  return 0
end
-- The string with (at, id) added in time order and, with cap > 0, the oldest dropped
-- (the newest dropped one's time the new floor) until cap remain, or a few more where
-- several share the oldest kept one's millisecond.
local function with_applied(state, at, id, cap)
  local floor = #state >= 8 and string.sub(state, 1, 8) or ms_bytes(0)
  local records, placed = {}, at == nil
  for i = 9, #state - 15, 16 do
    if not placed and at < ms_at(state, i) then
      records[#records + 1] = ms_bytes(at) .. id
      placed = true
    end
    records[#records + 1] = string.sub(state, i, i + 15)
  end
  if not placed then records[#records + 1] = ms_bytes(at) .. id end
  local first = 1
  if cap > 0 and #records > cap then
    first = #records - cap + 1
    -- Keep every record of the oldest kept one's time: another event of that same
    -- millisecond may still be on its way, and the floor must not cover it.
    while first > 1 and string.sub(records[first - 1], 1, 8) == string.sub(records[first], 1, 8) do
      first = first - 1
    end
    if first > 1 then floor = string.sub(records[first - 1], 1, 8) end
  end
  return floor .. table.concat(records, '', first)
end
local function store(key, value, ttl)
  if ttl > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('SET', key, value)
  end
end
"""

# KEYS: applied events, user vector, history, last event, profile counts.
# ARGV: new vector bytes (empty: leave the vector), broker time (ms), article id, ts,
#       event id, max history, the vector the new one was computed from (empty: there was
#       none), '1' for a purchase (history and counts), '0' for a weaker signal, the
#       customer state's ttl s ('0': none), the event id's hash, how many events to keep
#       remembered ('0': all, a candidate's).
# Returns 1 applied, 0 applied before (a duplicate), -1 the vector changed meanwhile.
APPLY_SCRIPT = (
    _APPLIED_LUA
    + """
local state = redis.call('GET', KEYS[1]) or ''
local at = tonumber(ARGV[2])
if applied(state, at, ARGV[10]) == 1 then
  return 0
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[7] then
  return -1
end
-- A key of another type fails the event before anything is written (a script is not
-- rolled back), so a dead letter sent back once the key is fixed is applied in full.
if ARGV[8] == '1' then
  local kinds = {zset = true, none = true}
  if not kinds[redis.call('TYPE', KEYS[3]).ok] then
    return redis.error_reply('WRONGTYPE the history key holds another type')
  end
  local profile = redis.call('TYPE', KEYS[5]).ok
  if profile ~= 'hash' and profile ~= 'none' then
    return redis.error_reply('WRONGTYPE the profile key holds another type')
  end
  local count = profile == 'hash' and redis.call('HGET', KEYS[5], 'purchases')
  if count and not string.match(count, '^%d+$') then
    return redis.error_reply('ERR the profile purchase count is not an integer')
  end
end
local state_ttl = tonumber(ARGV[9])
store(KEYS[1], with_applied(state, at, ARGV[10], tonumber(ARGV[11])), state_ttl)
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1])
end
store(KEYS[4], ARGV[5], state_ttl)
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
local first = tonumber(redis.call('HGET', KEYS[5], 'first_ts'))
if not first or ts < first then
  redis.call('HSET', KEYS[5], 'first_ts', ts)
end
local last = tonumber(redis.call('HGET', KEYS[5], 'last_ts'))
if not last or ts > last then
  redis.call('HSET', KEYS[5], 'last_ts', ts)
end
return 1
"""
)

# KEYS: applied events. ARGV: how many to keep remembered. Returns the records dropped.
TRIM_SCRIPT = (
    _APPLIED_LUA
    + """
local state = redis.call('GET', KEYS[1])
if not state then return 0 end
local kept = with_applied(state, nil, nil, tonumber(ARGV[1]))
if #kept == #state then return 0 end
redis.call('SET', KEYS[1], kept, 'KEEPTTL')
return (#state - #kept) / 16
"""
)

CONFLICT_RETRIES = 20
TRIM_BATCH = 1_000


def event_hash(event_id: str) -> bytes:
    """The 8 bytes an applied-event string remembers an event id by (per customer, so a
    collision needs two of one customer's latest events: about 1 in 10^18)."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


def is_applied(state: bytes | None, received_ms: int, event_id: str) -> bool:
    """What the script decides, read in Python (tests and the soak's books)."""
    if not state or len(state) < FLOOR_BYTES:
        return False
    if received_ms <= int.from_bytes(state[:FLOOR_BYTES], "big"):
        return True
    wanted = event_hash(event_id)
    return any(
        state[i + 8 : i + RECORD_BYTES] == wanted
        for i in range(FLOOR_BYTES, len(state) - RECORD_BYTES + 1, RECORD_BYTES)
    )


@dataclass(frozen=True)
class Target:
    """A version the updater applies events to; a candidate remembers every event."""

    version: str
    live: bool


def _script_call(
    script: Script, script_keys: list[str] | list[bytes], args: Sequence[EncodableT]
) -> Callable[[Any], object]:
    """The script with these keys and arguments, queued on the pipeline it is given."""
    return lambda pipe: script(keys=script_keys, args=args, client=pipe)


class ApplyConflictError(RedisError):
    """Another writer kept changing a customer's vector; the batch is retried later."""


class EventApplier:
    def __init__(self, settings: Settings, client: SyncRedis) -> None:
        self.settings = settings
        self.client = client
        self._apply = client.register_script(APPLY_SCRIPT)
        self._weights = event_weights(settings)
        self._item_cache: dict[tuple[str, str], Vector] = {}
        self._norm_cache: dict[str, float] = {}
        self._update_cache: dict[str, tuple[OnlineUpdate, FoldInModel | None]] = {}

    def active_versions(self) -> list[Target]:
        """The live version and every candidate being promoted."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.LIVE_VERSION)
        pipe.smembers(keys.CANDIDATE_VERSIONS)
        live, candidates = pipe.execute()
        targets = [Target(live.decode(), live=True)] if live else []
        names = {t.version for t in targets}
        targets += [
            Target(c, live=False) for c in sorted(c.decode() for c in candidates) if c not in names
        ]
        return targets

    def apply(
        self, target: Target, events: Sequence[Event], received_ms: Sequence[int]
    ) -> tuple[int, int]:
        """Apply events (in order) to target; return (applied, skipped as duplicates)."""
        flags = self.apply_each(target, events, received_ms)
        return sum(flags), len(flags) - sum(flags)

    def apply_each(
        self, target: Target, events: Sequence[Event], received_ms: Sequence[int]
    ) -> list[bool]:
        """Apply events (in order) to target, each with the broker time it was received
        at; per event, whether this call applied it (False: it had been applied before)."""
        if len(received_ms) != len(events):
            raise ValueError("one broker time per event")
        if not events:
            return []
        flags: list[bool] = [False] * len(events)
        pending = list(range(len(events)))
        for _ in range(CONFLICT_RETRIES):
            outcomes = self._attempt(
                target, [events[i] for i in pending], [received_ms[i] for i in pending]
            )
            for position, outcome in zip(pending, outcomes, strict=True):
                flags[position] = outcome is True
            # A conflict stops a customer's chain; their later events conflict too and
            # go again, in order, from a fresh read.
            pending = [p for p, o in zip(pending, outcomes, strict=True) if o is None]
            if not pending:
                return flags
        raise ApplyConflictError(f"{len(pending)} events kept conflicting; retrying the batch")

    def trim_applied(self, version: str) -> int:
        """Bound every customer's applied-event string of version to applied_events_kept
        (after its promotion: while a candidate it kept them all); return the records
        dropped. One pass over the version's keys, pipelined."""
        trim = self.client.register_script(TRIM_SCRIPT)
        dropped = 0
        batch: list[bytes] = []

        def flush() -> int:
            calls = [(key, _script_call(trim, [key], [kept])) for key in batch]
            batch.clear()
            return sum(int(n) for n in per_node(self.client, calls))

        kept = self.settings.applied_events_kept

        pattern = keys.applied_events_pattern(version)
        for key in self.client.scan_iter(match=pattern, count=TRIM_BATCH):
            batch.append(key)
            if len(batch) >= TRIM_BATCH:
                dropped += flush()
        if batch:
            dropped += flush()
        return dropped

    def _attempt(
        self, target: Target, events: Sequence[Event], received_ms: Sequence[int]
    ) -> list[bool | None]:
        """One pass: per event True applied, False a duplicate, None a conflict."""
        version = target.version
        kept = self.settings.applied_events_kept if target.live else 0
        # No duplicate check up front: the script checks each event's state, and a
        # duplicate inside a customer's chain makes that customer's later events conflict,
        # so they go again from a fresh read (rare: redeliveries after a crash).
        customers = list(dict.fromkeys(e.customer_id for e in events))
        raws = get_many(self.client, [keys.user_vector(version, c) for c in customers])
        users: dict[str, Vector | None] = {
            c: decode(raw) for c, raw in zip(customers, raws, strict=True)
        }
        update, folding = self._update(version)
        bought = self._histories(customers) if folding is not None else {}
        history_ids = [a for own in bought.values() for a in own]
        items = self._item_vectors(version, [e.article_id for e in events] + history_ids)
        default_norm = self._default_norm(version)

        scripts: list[tuple[str, Callable[[Any], object]]] = []
        planned: list[int] = []  # positions in events, in the order of the scripts
        by_customer: dict[str, list[tuple[int, Event]]] = defaultdict(list)
        for position, event in enumerate(events):
            by_customer[event.customer_id].append((position, event))
        for customer, own_events in by_customer.items():
            vector = users[customer]
            history = bought.get(customer, {})
            # One customer's events are in order (keyed partition), so the chain is too.
            for position, event in own_events:
                before = vector
                item = items.get(event.article_id)
                weight = self._weights[event.event_type]
                # Weight 0: recorded as applied (and as the last event), vector untouched;
                # a customer without a vector gets none from it.
                new = b""
                if item is not None and weight > 0:
                    if folding is None:
                        vector = ema_update(vector, item, update.ema_rate, default_norm, weight)
                    else:
                        vector = self._folded(
                            folding, history, items, event, weight, update.recency, default_norm
                        )
                    new = encode(vector)
                script_keys = [
                    keys.applied_events(version, customer),
                    keys.user_vector(version, customer),
                    keys.history(customer),
                    keys.last_event(customer),
                    keys.profile(version, customer),
                ]
                script_args: list[EncodableT] = [
                    new,
                    received_ms[position],
                    event.article_id,
                    int(event.ts.timestamp()),
                    event.event_id,
                    self.settings.history_max_items,
                    encode(before) if before is not None else b"",
                    "1" if event.is_purchase else "0",
                    self.settings.customer_state_ttl_s,
                    event_hash(event.event_id),
                    kept,
                ]
                scripts.append(
                    (script_keys[0], _script_call(self._apply, script_keys, script_args))
                )
                planned.append(position)
        outcomes: list[bool | None] = [False] * len(events)
        if planned:
            for position, result in zip(planned, per_node(self.client, scripts), strict=True):
                outcomes[position] = None if int(result) < 0 else bool(int(result))
        return outcomes

    def _item_vectors(self, version: str, article_ids: Sequence[str]) -> dict[str, Vector]:
        # A version's vectors stay as the batch wrote them (a content-placed article whose
        # metadata changes later is the exception this cache ignores), so each is fetched
        # once. A missing one is asked for again: a serving process writes it when it
        # places an article from the catalog topic (serve.catalog_feed).
        missing = [a for a in dict.fromkeys(article_ids) if (version, a) not in self._item_cache]
        if missing:
            raws = get_many(self.client, [keys.item_vector(version, a) for a in missing])
            for article_id, raw in zip(missing, raws, strict=True):
                vector = decode(raw)
                if vector is not None:
                    self._item_cache[(version, article_id)] = vector
        found = {a: self._item_cache.get((version, a)) for a in article_ids}
        return {a: v for a, v in found.items() if v is not None}

    @staticmethod
    def _folded(
        folding: FoldInModel,
        history: dict[str, float],
        items: dict[str, Vector],
        event: Event,
        weight: float,
        recency: Recency,
        default_norm: float,
    ) -> Vector:
        """Fold-in from the purchase history: a purchase joins it (as the script will
        store it), a weaker signal counts once at its weight; the event is the newest
        (age 0) for the recency weights and the step (RECSYS_FOLD_IN_*)."""
        ts = float(int(event.ts.timestamp()))  # the history's resolution
        if event.is_purchase:
            history[event.article_id] = ts
            vector = folding.user_vector(
                history, items, ts, latest=event.article_id, recency=recency,
                default_norm=default_norm,
            )  # fmt: skip
        else:
            vector = folding.user_vector(
                history, items, ts, (items[event.article_id], weight), recency=recency,
                default_norm=default_norm,
            )  # fmt: skip
        if vector is None:  # the item itself has a vector, so there is always one
            raise AssertionError("fold-in without an item")
        return vector

    def _update(self, version: str) -> tuple[OnlineUpdate, FoldInModel | None]:
        """The version's online update (recsys.online_update.resolve: the batch's choice
        under RECSYS_ONLINE_UPDATE=auto) and, when it folds in, the version's fold-in
        model; read from the version's meta once."""
        if version not in self._update_cache:
            raw = cast(dict[bytes, bytes], self.client.hgetall(keys.model_meta(version)))
            meta = {k.decode(): v.decode() for k, v in raw.items()}
            folding = FoldInModel.from_meta(meta)
            update = resolve(self.settings, meta, can_fold_in=folding is not None)
            self._update_cache[version] = (update, folding if update.kind == "fold_in" else None)
        return self._update_cache[version]

    def _histories(self, customers: Sequence[str]) -> dict[str, dict[str, float]]:
        """Each customer's purchase history: article id -> unix time of the latest."""
        pipe = self.client.pipeline(transaction=False)
        for customer in customers:
            pipe.zrange(keys.history(customer), 0, -1, withscores=True)
        return {
            customer: {article.decode(): float(ts) for article, ts in rows}
            for customer, rows in zip(customers, pipe.execute(), strict=True)
        }

    def _default_norm(self, version: str) -> float:
        if version not in self._norm_cache:
            raw = self.client.hget(keys.model_meta(version), "user_norm_median")
            self._norm_cache[version] = float(raw) if raw else 1.0
        return self._norm_cache[version]
