"""The load: sessions arrive open-loop (Poisson, paced to the target purchase rate), each
views recommendations a few times (now and then posting a view event for a shown item)
and maybe buys (sometimes after an add-to-cart); bad requests are mixed in, and every
Nth accepted purchase is followed by a freshness probe until the API shows it applied."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import numpy as np

from simulator.bad_requests import KINDS as BAD_KINDS
from simulator.config import SimulationConfig
from simulator.measure import Recorder
from simulator.population import Population

# Probes run beside the sessions' concurrency limit, so a busy API does not delay the
# measurement; this many at once keep them from swamping it.
MAX_PROBES_IN_FLIGHT: Final = 8
# Requests queued for a slot, per slot, beyond which new arrivals are dropped: an API that
# cannot keep up shows as dropped sessions, not as an ever-growing queue.
QUEUED_PER_SLOT: Final = 4
# Sessions alive at once (most of them pausing), beyond which arrivals are dropped too.
MAX_SESSIONS: Final = 10_000
RECOMMEND_K: Final = "10"
# An event refused with 503 is sent again after this long, doubling up to the maximum.
RETRY_FIRST_S: Final = 0.2
RETRY_MAX_S: Final = 2.0
JSON_HEADERS: Final = {"content-type": "application/json"}


@dataclass(frozen=True)
class Shopper:
    customer_id: str
    row: int | None  # in the population; None for a customer with no history


@dataclass(frozen=True)
class Shown:
    """A list a customer saw: its items, and its id when it was shown in an experiment."""

    items: list[dict[str, Any]]
    recommendation_id: str | None = None


NOTHING_SHOWN: Final = Shown([])


@dataclass
class DriftActivity:
    sessions: int = 0
    purchases: int = 0


class Budget:
    """The count bounds of a run: purchases posted and requests sent."""

    def __init__(self, max_events: int, max_requests: int) -> None:
        self.events_left = max_events
        self.requests_left = max_requests
        self.stopped_by: str | None = None

    @property
    def exhausted(self) -> bool:
        return self.stopped_by is not None

    @property
    def out_of_requests(self) -> bool:
        return self.requests_left <= 0

    def take_request(self) -> bool:
        if self.requests_left <= 0:
            self.stopped_by = self.stopped_by or "max_requests"
            return False
        self.requests_left -= 1
        return True

    def take_event(self) -> bool:
        if self.events_left <= 0:
            self.stopped_by = self.stopped_by or "max_events"
            return False
        self.events_left -= 1
        if self.events_left == 0:
            # The last purchase goes out; nothing new starts after it.
            self.stopped_by = self.stopped_by or "max_events"
        return True


class Traffic:
    def __init__(
        self,
        config: SimulationConfig,
        population: Population,
        client: httpx.AsyncClient,
        recorder: Recorder,
        run_id: str,
    ) -> None:
        self.config = config
        self.population = population
        self.client = client
        self.recorder = recorder
        self.run_id = run_id
        self.rng = np.random.default_rng([config.seed, 1])
        # The weaker signals draw from a stream of their own: the rest of the traffic is
        # the same with or without them.
        self.signal_rng = np.random.default_rng([config.seed, 2])
        self.budget = Budget(config.max_events, config.max_requests)
        self.slots = asyncio.Semaphore(config.concurrency)
        self.queued = 0  # requests waiting for a slot
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.probes: set[asyncio.Task[None]] = set()
        # This run's accepted event ids (weaker signals too), each with the number of
        # purchases accepted by then: a probe's "this purchase or a later event".
        self.accepted: dict[str, int] = {}
        # The same ids, each with its customer, event type and when it was acknowledged
        # (time.time()).
        self.accepted_events: dict[str, tuple[str, str, float]] = {}
        # Cleared, no event is posted until it is set again (the soak holds the load
        # while it restarts the broker); views go on.
        self.events_open = asyncio.Event()
        self.events_open.set()
        self.events_in_flight = 0
        self.drift_activity: defaultdict[int, DriftActivity] = defaultdict(DriftActivity)
        self.serial = 0
        self.start = 0.0
        self.deadline = 0.0

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def closing(self) -> bool:
        return self.budget.exhausted or self.now() >= self.deadline

    async def run(self) -> float:
        """Send the load; the seconds from the first arrival until the last session ended."""
        self.start = self.now()
        self.deadline = self.start + self.config.duration_s
        sessions: set[asyncio.Task[None]] = set()
        max_queued = self.config.concurrency * QUEUED_PER_SLOT
        next_at = self.start
        while True:
            next_at += self.rng.exponential(1.0 / self.config.session_rate_per_s)
            if next_at >= self.deadline:
                await asyncio.sleep(max(0.0, self.deadline - self.now()))
                break
            await asyncio.sleep(max(0.0, next_at - self.now()))
            if self.closing():
                break
            if self.queued >= max_queued or len(sessions) >= MAX_SESSIONS:
                self.recorder.dropped_sessions += 1
                continue
            self.recorder.sessions += 1
            task = asyncio.create_task(self.session(self.shopper()))
            sessions.add(task)
            task.add_done_callback(sessions.discard)
        # Sessions take no step past the deadline: what is in flight ends within a request.
        await _finish(
            sessions, max(0.0, self.deadline - self.now()) + self.config.request_timeout_s
        )
        elapsed = self.now() - self.start
        await _finish(self.probes, self.config.freshness_timeout_s + self.config.request_timeout_s)
        return elapsed

    def shopper(self) -> Shopper:
        new = self.population.new_customers
        if new and self.rng.random() < self.config.new_customer_share:
            return Shopper(new[int(self.rng.integers(len(new)))], None)
        row = self.population.draw_customer(self.rng)
        return Shopper(self.population.customer_ids[row], row)

    def drift_target(self, shopper: Shopper) -> int | None:
        """The product group this customer drifted to, once the drift time has come."""
        if shopper.row is None or self.now() - self.start < self.config.drift_at_s:
            return None
        return self.population.drift.target.get(shopper.row)

    def wanted_group(self, shopper: Shopper) -> tuple[int, bool]:
        """The product group to look at or buy from now, and whether drift chose it."""
        target = self.drift_target(shopper)
        if target is not None:
            return target, True
        taste = self.population.taste(shopper.row)
        return int(self.rng.choice(len(taste), p=taste)), False

    async def session(self, shopper: Shopper) -> None:
        if shopper.row is not None and self.drift_target(shopper) is not None:
            self.drift_activity[shopper.row].sessions += 1
        lo, hi = self.config.views_per_session
        shown = NOTHING_SHOWN
        for _ in range(int(self.rng.integers(lo, hi + 1))):
            if self.closing():
                return
            if self.rng.random() < self.config.bad_request_share:
                await self.bad_request(shopper)
            seen = await self.view(shopper)
            if seen is not None:
                shown = seen
                if self.signal_rng.random() < self.config.view_event_share:
                    item = seen.items[int(self.signal_rng.integers(len(seen.items)))]
                    if "article_id" in item:
                        await self.signal(shopper, "view", str(item["article_id"]))
            await self.pause()
        if self.rng.random() < self.config.purchase_probability and not self.closing():
            await self.purchase(shopper, shown)

    async def pause(self) -> None:
        if self.config.think_time_s > 0:
            wait = self.rng.exponential(self.config.think_time_s)
            await asyncio.sleep(min(wait, max(0.0, self.deadline - self.now())))

    async def view(self, shopper: Shopper) -> Shown | None:
        params = {"k": RECOMMEND_K}
        if self.rng.random() < self.config.filter_share:
            name = self.population.catalogue.groups[self.wanted_group(shopper)[0]]
            if name:
                params["product_group"] = name
        if self.rng.random() < self.config.popular_share:
            kind, path = "popular", "/popular"
        else:
            kind, path = "recommend", f"/recommend/{shopper.customer_id}"
        response = await self.send(kind, "GET", path, params=params)
        body = self.json_of(kind, response)
        items = body.get("items") if body else None
        if not isinstance(items, list) or not items:
            return None
        rec_id = body.get("recommendation_id") if body else None
        return Shown(items, rec_id if isinstance(rec_id, str) else None)

    def pick_article(self, group: int, shown: Shown) -> tuple[str, float | None, str | None]:
        """An article of the group, the price, and the list it came from: each shown item
        of the group tempts the customer with probability follow_recommendations (so a
        list with more of what they want sells more; the best of them is bought), else
        an article of the group by sales."""
        catalogue = self.population.catalogue
        name = catalogue.groups[group]
        matching = [
            str(item["article_id"])
            for item in shown.items
            if "article_id" in item
            and (item.get("metadata") or {}).get("product_group_name") == name
        ]
        tempted = 1.0 - (1.0 - self.config.follow_recommendations) ** len(matching)
        if matching and self.rng.random() < tempted:
            return matching[0], None, shown.recommendation_id
        row = catalogue.draw(self.rng, group)
        price = float(catalogue.price[row])
        return catalogue.article_ids[row], round(price, 6) if math.isfinite(price) else None, None

    async def purchase(self, shopper: Shopper, shown: Shown) -> None:
        if not self.budget.take_event():
            return
        group, drifted = self.wanted_group(shopper)
        article, price, recommendation_id = self.pick_article(group, shown)
        self.serial += 1
        event_id = f"sim-{self.run_id}-{self.serial}"
        body: dict[str, Any] = {
            "customer_id": shopper.customer_id,
            "article_id": article,
            "event_id": event_id,
        }
        if price is not None:
            body["price"] = price
        if recommendation_id is not None:
            body["recommendation_id"] = recommendation_id
        # One purchase of a customer at a time: their events reach the topic in the order
        # of their 202s, which is what a freshness probe relies on.
        async with self.locks[shopper.customer_id]:
            if self.signal_rng.random() < self.config.add_to_cart_share:
                await self.signal(shopper, "add_to_cart", article, locked=True)
            self.recorder.events_posted += 1
            response = await self.post_event("purchase", body)
            if response is None or response.status_code != 202:
                return
            accepted_at = self.now()
            answer = self.json_of("purchase", response)
            if answer is None or answer.get("event_id") != event_id:
                self.recorder.error("purchase: event_id not echoed", f"{event_id} -> {answer}")
                return
            self.recorder.events_accepted += 1
            self.accepted[event_id] = self.recorder.events_accepted
            self.accepted_events[event_id] = (shopper.customer_id, "purchase", time.time())
            if drifted and shopper.row is not None:
                self.drift_activity[shopper.row].purchases += 1
            self.maybe_probe(shopper.customer_id, event_id, accepted_at)

    async def signal(
        self, shopper: Shopper, event_type: str, article: str, *, locked: bool = False
    ) -> None:
        """POST /events/{event_type}: a view or add-to-cart, under the customer's lock (so
        it reaches the topic in order with their purchases) unless the caller holds it."""
        self.serial += 1
        event_id = f"sim-{self.run_id}-{self.serial}"
        body = {"customer_id": shopper.customer_id, "article_id": article, "event_id": event_id}
        async with contextlib.nullcontext() if locked else self.locks[shopper.customer_id]:
            response = await self.post_event(event_type, body)
            if response is not None and response.status_code == 202:
                self.accepted[event_id] = self.recorder.events_accepted
                self.accepted_events[event_id] = (shopper.customer_id, event_type, time.time())

    async def post_event(self, event_type: str, body: dict[str, Any]) -> httpx.Response | None:
        """POST /events/{event_type}; a 503 or no answer is sent again, the same event id,
        for up to retry_unavailable_s (the API's contract: a retry is safe)."""
        give_up_at = self.now() + self.config.retry_unavailable_s
        delay = RETRY_FIRST_S
        while True:
            await self.events_open.wait()
            self.events_in_flight += 1
            try:
                response = await self.send(event_type, "POST", f"/events/{event_type}", json=body)
            finally:
                self.events_in_flight -= 1
            refused = (response is None and not self.budget.out_of_requests) or (
                response is not None and response.status_code == 503
            )
            if not refused or self.config.retry_unavailable_s <= 0:
                return response
            if self.now() + delay > give_up_at:
                self.recorder.events_given_up += 1
                return response
            self.recorder.events_retried += 1
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_S)

    async def bad_request(self, shopper: Shopper) -> None:
        make = BAD_KINDS[int(self.rng.integers(len(BAD_KINDS)))]
        catalogue = self.population.catalogue
        article = catalogue.article_ids[int(self.rng.integers(len(catalogue.article_ids)))]
        self.serial += 1
        bad = make(shopper.customer_id, article, f"{self.run_id}-{self.serial}")
        response = await self.send(
            "bad",
            bad.method,
            bad.path,
            params=bad.params,
            content=bad.body,
            expect="4xx",
            note=bad.reason,
        )
        if response is not None or not self.budget.out_of_requests:
            self.recorder.bad_request(bad.reason, response.status_code if response else None)

    def maybe_probe(self, customer_id: str, event_id: str, accepted_at: float) -> None:
        every = self.config.freshness_every
        if every == 0 or self.recorder.events_accepted % every != 0:
            return
        if len(self.probes) >= MAX_PROBES_IN_FLIGHT:
            self.recorder.probes_skipped += 1
            return
        self.recorder.probes += 1
        task = asyncio.create_task(self.probe(customer_id, self.accepted[event_id], accepted_at))
        self.probes.add(task)
        task.add_done_callback(self.probes.discard)

    async def probe(self, customer_id: str, order: int, accepted_at: float) -> None:
        """Poll the customer's recommendations until they name this purchase (or a later
        one of theirs: the updater applies a customer's events in order) as applied."""
        give_up = accepted_at + self.config.freshness_timeout_s
        path = f"/recommend/{customer_id}"
        try:
            while True:
                response = await self.send("probe", "GET", path, params={"k": "1"}, gated=False)
                seen = self.now()
                if response is None and self.budget.out_of_requests:
                    self.recorder.probes_abandoned += 1
                    return
                body = self.json_of("probe", response) if response is not None else None
                applied = body.get("applied_event_id") if body else None
                if isinstance(applied, str) and self.accepted.get(applied, 0) >= order:
                    self.recorder.freshness_s.append(seen - accepted_at)
                    return
                if seen >= give_up:
                    self.recorder.probes_timed_out += 1
                    return
                await asyncio.sleep(self.config.freshness_poll_s)
        except asyncio.CancelledError:
            self.recorder.probes_abandoned += 1
            raise

    async def send(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        content: bytes | None = None,
        expect: str = "2xx",
        note: str | None = None,
        gated: bool = True,
    ) -> httpx.Response | None:
        """One request, counted and timed; None when the budget is spent or it failed."""
        if not self.budget.take_request():
            return None
        what = f"{note + ': ' if note else ''}{method} {path}"
        headers = JSON_HEADERS if content is not None else None
        async with self.slot() if gated else contextlib.nullcontext():
            began = time.perf_counter()
            try:
                response = await self.client.request(
                    method, path, params=params, json=json, content=content, headers=headers
                )
            except httpx.HTTPError as exc:
                self.recorder.transport_error(kind, time.perf_counter() - began, exc, what)
                return None
            took = time.perf_counter() - began
        self.recorder.response(
            kind, response.status_code, took, expect=expect, what=what, body=response.text
        )
        return response

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the `concurrency` request slots, counting who waits for one."""
        self.queued += 1
        try:
            await self.slots.acquire()
        finally:
            self.queued -= 1
        try:
            yield
        finally:
            self.slots.release()

    def json_of(self, kind: str, response: httpx.Response | None) -> dict[str, Any] | None:
        if response is None or response.status_code >= 300:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.recorder.error(f"{kind}: not a JSON object", response.text[:200])
            return None
        return body


async def _finish(tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait for the tasks up to timeout_s, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
