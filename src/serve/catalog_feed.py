"""Each serving process follows the catalog topic: every article goes into its own index
copy (placed by its content vector, or its metadata changed), and is held in memory to be
applied again to each version the process loads, so a batch that did not know it does
not make it disappear.

The Qdrant Edge copy is queried on the event loop, so articles are applied there too: a
thread reads the topic, the loop writes the index, at most CHUNK articles at a time (one
placed article costs ~0.1 ms, and a lone one 6-9 ms of pandas set-up in the featurizer).
A version being loaded is given the articles in its loader thread, before anyone can
query it; only those received meanwhile are left for the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from observability.api_metrics import Metrics
from recsys.articles import Article, CatalogMessage
from recsys.availability import AVAILABLE_FIELD
from recsys.bus import EventBus
from recsys.index.base import COLLABORATIVE, CONTENT, PLACED_BY_FIELD, IndexedItem
from recsys.settings import Settings
from recsys.user_store import ServingUserStore
from serve.live_model import ServedModel

log = logging.getLogger(__name__)

POLL_S: Final = 0.1
BATCH: Final = 500
# Articles applied in one go on the event loop: ~10 ms of it for 100 new ones.
CHUNK: Final = 100
# How often articles that failed to apply are tried again, and the topic looked up again.
RETRY_S: Final = 1.0
# How long the broker may hold an empty fetch. The updater's 5 ms would cost every API
# worker 200 fetches a second while the catalogue is quiet (measured: a tenth of the
# serving throughput); 50 ms keeps a new article servable well within a second.
FETCH_WAIT_MS: Final = 50
STOP_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class CatalogChange:
    """What the catalog topic says of one article now: its newest upsert and its newest
    availability, each None if it never said."""

    article_id: str
    article: Article | None = None
    available: bool | None = None


class ReceivedArticles:
    """The newest message of every article received, by op (the consumer thread adds, the
    loop reads), and which articles the served versions have not been given yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # op -> article_id -> (its newest message, the count of messages kept when it came)
        self._latest: dict[str, dict[str, tuple[CatalogMessage, int]]] = {
            "upsert": {},
            "availability": {},
        }
        self._kept = 0
        self._pending: dict[str, None] = {}  # in arrival order

    def __len__(self) -> int:
        return len(self._latest["upsert"])

    def add(self, messages: Iterable[CatalogMessage]) -> int:
        """Keep each message that is its article's newest of its op; return how many were."""
        fresh = 0
        with self._lock:
            for message in messages:
                latest = self._latest[message.op]
                held = latest.get(message.key)
                if held is None or message.supersedes(held[0]):
                    self._kept += 1
                    latest[message.key] = (message, self._kept)
                    self._pending[message.key] = None
                    fresh += 1
        return fresh

    def _change(self, article_id: str) -> CatalogChange:
        upsert = self._latest["upsert"].get(article_id)
        availability = self._latest["availability"].get(article_id)
        return CatalogChange(
            article_id,
            article=None if upsert is None else upsert[0].article,
            available=None
            if availability is None or availability[0].availability is None
            else availability[0].availability.available,
        )

    def take_pending(self, limit: int) -> list[CatalogChange]:
        """Up to `limit` articles the served versions have not been given, oldest first."""
        with self._lock:
            taken = list(itertools.islice(self._pending, limit))
            for article_id in taken:
                del self._pending[article_id]
            return [self._change(a) for a in taken]

    def has_pending(self) -> bool:
        return bool(self._pending)

    def pend(self, changes: Iterable[CatalogChange]) -> None:
        """Apply these again (a write failed)."""
        with self._lock:
            self._pending.update(dict.fromkeys(c.article_id for c in changes))

    def _ids(self, since: int) -> list[str]:
        ids = (
            article_id
            for latest in self._latest.values()
            for article_id, (_, kept) in latest.items()
            if kept > since
        )
        return list(dict.fromkeys(ids))

    def snapshot(self) -> tuple[int, list[CatalogChange]]:
        """Every article held, and a mark to ask later what came `since`."""
        with self._lock:
            return self._kept, [self._change(a) for a in self._ids(0)]

    def since(self, mark: int) -> list[CatalogChange]:
        with self._lock:
            return [self._change(a) for a in self._ids(mark)]

    def articles(self) -> list[Article]:
        with self._lock:
            return [m.article for m, _ in self._latest["upsert"].values() if m.article]


@dataclass
class Applied:
    """What applying the catalog topic to one version did, by article."""

    content: int = 0  # placed by their content vector (new, or content-placed before)
    metadata_only: int = 0  # collaborative items: new metadata, the same vector
    availability_only: int = 0  # made available or not, nothing else changed
    unplaced: int = 0  # new, but the version has no content model to place them
    unknown: int = 0  # an availability for an article the version does not have (yet)
    unchanged: int = 0  # the version already had them exactly so
    placed: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)


def apply_articles(model: ServedModel, changes: Sequence[CatalogChange]) -> Applied:
    """Put the articles into the version's index. An item with a collaborative vector keeps
    it and gets the new metadata; any other is placed by the version's content model
    (`placed_by: content`). An availability changes that field alone, and an upsert keeps
    the item's (recsys.availability). Nothing is written for an item the version already
    has so."""
    index = model.index
    stored = index.retrieve([c.article_id for c in changes])
    vectors = index.vectors(list(stored))
    done = Applied()
    updates: list[IndexedItem] = []
    to_place: list[tuple[Article, bool | None]] = []
    for change in changes:
        aid = change.article_id
        held = stored.get(aid)
        known = held is not None and aid in vectors
        available = change.available
        if available is None and held is not None:
            available = held.get(AVAILABLE_FIELD)
        if change.article is None:
            if held is None or not known:
                done.unknown += 1  # given again with the article, or to a later version
                continue
            payload = {**held, AVAILABLE_FIELD: available}
            if payload == held:
                done.unchanged += 1
            else:
                updates.append(IndexedItem(aid, vectors[aid], payload))
                done.availability_only += 1
            continue
        if held is None or not known or held.get(PLACED_BY_FIELD) == CONTENT:
            to_place.append((change.article, available))
            continue
        payload = change.article.payload(COLLABORATIVE, available)
        if payload == held:
            done.unchanged += 1
        else:
            updates.append(IndexedItem(aid, vectors[aid], payload))
            done.metadata_only += 1
    if to_place and model.content is None:
        done.unplaced += len(to_place)
    elif to_place and model.content is not None:
        predicted = model.content.predict([a.content_row() for a, _ in to_place])
        for (article, available), vector in zip(to_place, predicted, strict=True):
            aid, payload = article.article_id, article.payload(CONTENT, available)
            before = vectors.get(aid)
            if stored.get(aid) == payload and before is not None and np.allclose(before, vector):
                done.unchanged += 1
                continue
            updates.append(IndexedItem(aid, vector, payload))
            done.placed[aid] = vector
            done.content += 1
    if updates:
        index.upsert(updates)
    return done


class CatalogFeed:
    """The catalog topic in this process: a thread reads it from the beginning (so a
    process started later still gets every article), the event loop applies it."""

    def __init__(
        self, settings: Settings, bus: EventBus, users: ServingUserStore, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.received = ReceivedArticles()
        # Set once the consumer reads the topic (tests wait for it).
        self.reading = threading.Event()
        self._bus = bus
        self._users = users
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: Callable[[], list[ServedModel]] = list
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, targets: Callable[[], list[ServedModel]]) -> None:
        """Follow the topic; `targets` names the versions served now (call on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._targets = targets
        self._thread = threading.Thread(target=self._run, name="catalog-feed", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_S)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def prepare(self, model: ServedModel) -> Callable[[], None]:
        """Give a newly loaded version every article held, in its loader thread (nobody
        queries it yet); return what is left for the event loop before it serves: the
        articles received meanwhile (serve.live_model.Prepare)."""
        mark, changes = self.received.snapshot()
        first = self._apply_or_pend(model, changes)

        def finish() -> None:
            for done in (first, self._apply_or_pend(model, self.received.since(mark))):
                self._applied(model.version, done)

        return finish

    def _apply_or_pend(
        self, model: ServedModel, changes: Sequence[CatalogChange]
    ) -> Applied | None:
        """None: it failed, and the articles wait for the next try on the served versions."""
        if not changes:
            return Applied()
        try:
            return apply_articles(model, changes)
        except Exception as exc:
            log.warning("catalog articles not applied to %s yet: %s", model.version, exc)
            self.received.pend(changes)
            return None

    # ---------------------------------------------------------------- on the loop

    async def _apply_pending(self) -> None:
        # Each chunk is taken and applied with no await between: a newer message of an
        # article cannot be overtaken by an older one.
        while changes := self.received.take_pending(CHUNK):
            results = [(m.version, self._apply_or_pend(m, changes)) for m in self._targets()]
            for version, done in results:
                self._applied(version, done)
            if any(done is None for _, done in results):
                return  # the consumer thread schedules the next try (RETRY_S)
            await asyncio.sleep(0)  # requests waiting go first

    def _applied(self, version: str, applied: Applied | None) -> None:
        if applied is not None:
            self._count(applied)
            self._write_vectors_later(version, applied)

    def _count(self, applied: Applied) -> None:
        counter = self._metrics.articles_applied
        for placement, n in (
            ("content", applied.content),
            ("metadata_only", applied.metadata_only),
            ("availability_only", applied.availability_only),
            ("none", applied.unplaced),
        ):
            if n:
                counter.labels(placement=placement).inc(n)

    def _write_vectors_later(self, version: str, applied: Applied) -> None:
        if applied.placed:
            self._spawn(self._write_vectors(version, applied.placed))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_vectors(self, version: str, placed: dict[str, npt.NDArray[Any]]) -> None:
        """The item vectors the updater reads: a purchase of a placed article then moves
        the customer's vector (the version's online update), as for one the batch placed.
        Every process writes the same values."""
        try:
            await self._users.put_item_vectors(version, placed)
        except Exception as exc:
            log.warning("item vectors of %d placed articles not in Redis: %s", len(placed), exc)

    # ---------------------------------------------------------------- the consumer thread

    def _run(self) -> None:
        # No consumer group: every process reads every partition from the beginning and
        # commits nothing, so assigning them directly skips a group join (~3 s).
        consumer = self._bus.reader("recsys-api-catalog", **{"fetch.wait.max.ms": FETCH_WAIT_MS})
        try:
            if not self._assign(consumer):
                return
            self.reading.set()
            scheduled = 0.0
            while not self._stop.is_set():
                try:
                    scheduled = self._read_once(consumer, scheduled)
                except Exception:  # one bad turn never ends the feed
                    log.exception("the catalog feed failed a read; going on in %.1f s", RETRY_S)
                    self._stop.wait(RETRY_S)
        except Exception:
            log.exception("the catalog feed stopped; new articles reach this process no more")
        finally:
            consumer.close()

    def _read_once(self, consumer: Consumer, scheduled: float) -> float:
        """Read what has come, hand it to the event loop; return when that was last done."""
        # Wait for one message, then take what is already fetched: consume(n, t) alone
        # would hold a lone article for the whole timeout.
        batch = consumer.consume(1, POLL_S)
        if batch:
            batch += consumer.consume(BATCH - 1, 0)
        fresh = self.received.add(self._parse(batch))
        retry = self.received.has_pending() and time.monotonic() - scheduled >= RETRY_S
        if fresh or retry:
            scheduled = time.monotonic()
            self._schedule()
        return scheduled

    def _assign(self, consumer: Consumer) -> bool:
        topic = self.settings.catalog_topic
        while not self._stop.is_set():
            try:
                found = consumer.list_topics(topic, timeout=RETRY_S).topics.get(topic)
            except KafkaException:
                found = None
            if found is not None and found.error is None and found.partitions:
                consumer.assign(
                    [TopicPartition(topic, p, OFFSET_BEGINNING) for p in found.partitions]
                )
                return True
            self._stop.wait(RETRY_S)
        return False

    def _parse(self, batch: Sequence[Message]) -> list[CatalogMessage]:
        messages = []
        for raw in batch:
            if raw.error() is not None:
                continue
            try:
                messages.append(CatalogMessage.from_bytes(raw.value() or b""))
            except ValidationError:
                self._metrics.catalog_invalid.inc()
                log.warning("skipped an invalid message at %s offset %s", raw.topic(), raw.offset())
        return messages

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: shutting down
            asyncio.run_coroutine_threadsafe(self._apply_pending(), loop)
