"""The model version this process serves, swapped when the live-version pointer moves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recsys.content_model import ContentModel, load_content_model
from recsys.index.base import ItemFilter, ItemIndex, ScoredItem
from recsys.index.factory import open_backend
from recsys.model_store import Manifest, read_manifest, read_trending
from recsys.settings import Settings
from recsys.trending_lists import TrendingLists
from recsys.user_store import ServingUserStore

if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    version: str
    index: ItemIndex
    # Held in memory so the fallback answers even when Redis or the index does not.
    trending: TrendingLists
    manifest: Manifest
    # Places an article that arrives after the batch (serve.catalog_feed); None for a
    # version trained without one.
    content: ContentModel | None = None

    def popular(self, k: int, rules: ItemFilter) -> list[ScoredItem]:
        """The trending list with the rules, less what the index marks unavailable now."""
        return self.trending.top(k, rules, self.index.unavailable())


# Runs in the loader thread on a version nobody queries yet; what it returns runs on the
# event loop right before the version serves (serve.catalog_feed: the articles received
# since the batch, which the version may not know).
Prepare = Callable[[ServedModel], Callable[[], None]]


def _nothing() -> None:
    """No preparation: nothing to finish."""


# Longer than any request can take (its Redis timeout is well under a second).
RETIRE_AFTER_S = 10.0


class LiveModel:
    def __init__(
        self,
        settings: Settings,
        users: ServingUserStore,
        *,
        pinned: Sequence[str] = (),
        prepare: Prepare | None = None,
        index_reads: AsyncQdrantClient | None = None,
    ) -> None:
        """`index_reads`: a Qdrant server's async client (recsys.index.factory.open_reads),
        made and closed by the caller; the versions served read through it."""
        self.settings = settings
        self.users = users
        self._prepare = prepare
        self.backend = open_backend(settings, reads=index_reads)
        self.current: ServedModel | None = None
        # Versions an experiment's variants serve beside the live one, loaded at start.
        self._pinned_versions = tuple(pinned)
        self.pinned: dict[str, ServedModel] = {}
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()
        for version in self._pinned_versions:
            try:
                loaded, finish = await asyncio.to_thread(self._load, version)
                finish()
                self.pinned[version] = loaded
            except Exception as exc:  # pruned, or never published: its arm gets the live one
                log.warning(
                    "experiment version %s cannot be served (%s): live instead", version, exc
                )
        self._task = asyncio.create_task(self._poll())

    def served(self) -> list[ServedModel]:
        """Every version this process answers with: the live one and the pinned ones."""
        current = [] if self.current is None else [self.current]
        return current + list(self.pinned.values())

    def serving(self, version: str | None) -> ServedModel | None:
        """The model a request for this version gets: the pinned one, else the live one."""
        if version is not None and (pinned := self.pinned.get(version)) is not None:
            return pinned
        return self.current

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._retiring):  # close retired versions now, not later
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.current is not None:
            self.current.index.close()
            self.current = None
        for served in self.pinned.values():
            served.index.close()
        self.pinned.clear()

    async def refresh(self) -> None:
        version = await self.users.live_version()
        if version is None or (self.current and self.current.version == version):
            return
        loaded, finish = await asyncio.to_thread(self._load, version)
        # No await between this and the swap: nothing the feed applies meanwhile can reach
        # the old version only.
        finish()
        old, self.current = self.current, loaded
        # What a version holds lives as long as it does: out of the collector's sight, a
        # full collection no longer walks the catalogue (73 ms pauses under load before).
        gc.freeze()
        log.info("serving model version %s", version)
        if old is not None:
            # A request that began on the old version may still be waiting for Redis and
            # search it afterwards: close it once no request can still hold it.
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: ServedModel) -> None:
        try:
            await asyncio.sleep(RETIRE_AFTER_S)
        finally:
            old.index.close()

    def _load(self, version: str) -> tuple[ServedModel, Callable[[], None]]:
        """The version, and what is left to do on the event loop before it serves."""
        manifest = read_manifest(self.settings.models_dir, version)
        loaded = ServedModel(
            version=version,
            index=self.backend.open(version, manifest.index.beams if manifest.index else None),
            trending=read_trending(self.settings.models_dir, version),
            manifest=manifest,
            content=load_content_model(self.settings.models_dir, version),
        )
        return loaded, (_nothing if self._prepare is None else self._prepare(loaded))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep serving the version we have
                log.warning("could not check the live model version: %s", exc)
