"""Helpers shared by tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import psutil
import redis
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from recsys import keys
from recsys.apply import EventApplier, Target
from recsys.bus import consumer_config, producer_config
from recsys.engines.tansu import tansu_binary
from recsys.engines.valkey import valkey_binary
from recsys.events import Event
from recsys.settings import Settings
from recsys.stores import SyncRedis, redis_client
from recsys.vectors import Vector

T = TypeVar("T")


def engine_processes() -> list[psutil.Process]:
    """Every live valkey-server or tansu started from this checkout's binaries."""
    binaries = {str(valkey_binary()), str(tansu_binary())}
    found = []
    for proc in psutil.process_iter(["exe", "cmdline", "status"]):
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("exe") in binaries or (cmd and cmd[0] in binaries):
            found.append(proc)
    return found


def engine_pids() -> set[int]:
    return {p.pid for p in engine_processes()}


def new_topic(settings: Settings, partitions: int = 2) -> str:
    """A topic of the test's own on the suite's broker."""
    assert settings.kafka_bootstrap_servers
    name = f"events-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    return name


def own_stream(settings: Settings, data_dir: Path) -> Settings:
    """Settings with a lake and an events topic of the test's own (its dead-letter topic
    named after it, not created), groups of its own, and quick archiver flushes."""
    topic = new_topic(settings)
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "events_topic": topic,
            "dlq_topic": f"{topic}.dlq",
            "updater_group": f"upd-{topic}",
            "archiver_group": f"arch-{topic}",
            "archiver_flush_interval_s": 0.2,
        }
    )


@contextlib.contextmanager
def isolated(settings: Settings, data_dir: Path, db: int) -> Iterator[tuple[Settings, SyncRedis]]:
    """Settings with their own data dir and Redis database (emptied before and after), so
    a test can run batches and promotions while the suite's live model stays as it is."""
    assert settings.redis_url
    mine = settings.model_copy(
        update={"data_dir": data_dir, "redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{db}"}
    )
    client = redis_client(mine.redis_url or "", 10)
    client.flushdb()
    try:
        yield mine, client
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def two_versions(
    settings: Settings, version: str, data_dir: Path, db: int
) -> Iterator[tuple[Settings, SyncRedis]]:
    """An isolated stack with two copies of `version`, as two batch runs that never heard
    of what the test sends: v1 live, v2 there to promote; a catalog topic of its own and a
    fast poll of the live pointer."""
    with isolated(settings, data_dir, db=db) as (own, client):
        for copy in ("v1", "v2"):
            shutil.copytree(settings.models_dir / version, own.models_dir / copy)
        client.set(keys.LIVE_VERSION, "v1")
        yield (
            own.model_copy(
                update={"catalog_topic": new_topic(settings, 1), "model_poll_interval_s": 0.2}
            ),
            client,
        )


class TcpProxy:
    """A loopback TCP proxy a test can break: "forward" passes bytes both ways, "refuse"
    drops every connection at once (a dependency that is down), "blackhole" accepts and
    never answers (a dependency that hangs)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "forward"
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url_for(self, url: str) -> str:
        """url (user, password and path kept) reaching its server through this proxy."""
        parts = urlsplit(url)
        user_info = parts.netloc.rpartition("@")[0]
        netloc = f"{user_info}@127.0.0.1:{self.port}" if user_info else f"127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()
            self._open.clear()

    def close(self) -> None:
        self._closed = True
        self.set_mode("refuse")
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            with self._lock:
                self._open.append(client)
            if self.mode == "blackhole":
                continue  # held open, never answered
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def running_updater(settings: Settings, client: redis.Redis) -> Iterator[str]:
    """The updater consuming the events topic in a thread, as `recsys updater` does in its
    process, in a consumer group of its own (named by the value yielded)."""
    from confluent_kafka import Consumer, Producer

    from recsys.bus import consumer_config, producer_config
    from stream.updater import Updater

    assert settings.kafka_bootstrap_servers
    group = f"updater-test-{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(update={"updater_group": group})
    consumer = Consumer(consumer_config(settings.kafka_bootstrap_servers, group, own))
    consumer.subscribe([settings.events_topic])
    producer = Producer(producer_config(settings.kafka_bootstrap_servers, own))
    stop = threading.Event()
    thread = threading.Thread(
        target=Updater(own, client, consumer, producer).run, args=(stop,), daemon=True
    )
    thread.start()
    try:
        yield group
    finally:
        stop.set()
        thread.join(timeout=10)
        consumer.close()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll until predicate() is truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@contextlib.contextmanager
def serving(app: Any, **options: Any) -> Iterator[str]:
    """The ASGI app behind uvicorn on a free loopback port, in a thread; yields its URL.
    options: uvicorn's, over quiet logs."""
    import uvicorn

    from recsys.engines.process import free_port

    port = free_port()
    config = {"log_level": "warning", **options, "host": "127.0.0.1", "port": port}
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start in 60 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def counter(metrics: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus exposition (0 when it is not there)."""
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    found = re.search(rf"^{re.escape(name + wanted)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def apply_live(applier: EventApplier, version: str, events: Sequence[Event]) -> tuple[int, int]:
    """Apply events to version as the live one, each received at its own event time (so a
    second delivery carries the same broker time, as a redelivered message does)."""
    stamps = [int(e.ts.timestamp() * 1000) for e in events]
    return applier.apply(Target(version, live=True), events, stamps)


@contextlib.contextmanager
def events_on_topic(
    settings: Settings, events: Sequence[Event]
) -> Iterator[tuple[Consumer, list[Message]]]:
    """Produce the events onto the settings' events topic and read them back as the
    archiver's group would: (its consumer, the messages), the consumer closed after."""
    bootstrap = str(settings.kafka_bootstrap_servers)
    producer = Producer(producer_config(bootstrap, settings))
    for event in events:
        producer.produce(settings.events_topic, key=event.customer_id.encode(),
                         value=event.to_bytes())  # fmt: skip
    assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(bootstrap, settings.archiver_group, settings))
    consumer.subscribe([settings.events_topic])
    try:
        messages: list[Message] = []
        deadline = time.monotonic() + 30
        while len(messages) < len(events) and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(10, 0.5) if m.error() is None]
        yield consumer, messages
    finally:
        consumer.close()


async def ticks_during(work: Awaitable[T]) -> tuple[T, int]:
    """What `work` returns, and how often a 10 ms ticker ran on the event loop meanwhile:
    how free the loop stayed."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        return await work, ticks
    finally:
        ticker.cancel()


def assert_ema_chain(
    client: redis.Redis,
    version: str,
    customer: str,
    events: Sequence[Event],
    items: Mapping[str, Vector | None],
    rate: float,
    default_norm: float,
) -> None:
    """The customer's stored vector is the EMA of their events' items, in order."""
    from recsys.ema import ema_update
    from recsys.vectors import decode

    expected = None
    for event in events:
        item = items[event.article_id]
        if item is not None:
            expected = ema_update(expected, item, rate, default_norm)
    stored = decode(client.get(keys.user_vector(version, customer)))
    assert stored is not None and expected is not None
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-6)
