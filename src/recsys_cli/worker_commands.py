"""The long-running processes: serve (the API), updater and archiver."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol

import typer

from recsys.readiness import announce_ready
from recsys.settings import Settings
from recsys_cli.console import drain_hook, load_settings, stack_engines

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition
    from prometheus_client import CollectorRegistry

    from recsys.bus import EventBus
    from recsys.engines.embedded import Endpoints, Engine

log = logging.getLogger("recsys")


app = typer.Typer()


class Worker(Protocol):
    def run(self, stop: threading.Event) -> None: ...

    # The group's rebalance callbacks: commit what was finished before partitions go.
    def partitions_revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None: ...

    def partitions_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None: ...


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
) -> None:
    """Serve the HTTP API (uvicorn) on the live model version."""
    from serve.app import create_app

    settings = load_settings()
    with stack_engines(settings) as endpoints:
        resolved = settings.model_copy(
            update={
                "redis_url": endpoints.redis_url,
                "kafka_bootstrap_servers": endpoints.kafka_bootstrap,
            }
        )
        listen = (host or settings.api_host, port if port is not None else settings.api_port)
        if settings.api_workers == 1:
            run_uvicorn(create_app(resolved), *listen)
        else:
            # Each worker builds its app from the environment, engines included.
            os.environ.update(endpoints.as_env())
            run_uvicorn("serve.app:app_from_environment", *listen, workers=settings.api_workers)


# How this project runs uvicorn. No access log, at any log level: its lines carry request
# paths, and paths carry customer ids (http_request_duration_seconds counts each request
# by its route template instead).
UVICORN_OPTIONS: Final[Mapping[str, Any]] = MappingProxyType(
    {"log_level": "warning", "access_log": False, "http": "httptools", "loop": "uvloop"}
)


def run_uvicorn(target: object, host: str, port: int, *, workers: int = 1) -> None:
    """The one way this project runs an HTTP server (the API and the bench's yardstick):
    an app object in this process, or with workers > 1 an app factory's import path run
    in that many processes that share the port and report metrics together."""
    import tempfile

    import uvicorn

    from observability.api_metrics import MULTIPROC_ENV

    options: dict[str, Any] = {"host": host, "port": port, **UVICORN_OPTIONS}
    if workers == 1:
        uvicorn.run(target, **options)  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="recsys-metrics-") as shared:
        os.environ[MULTIPROC_ENV] = shared
        uvicorn.run(str(target), factory=True, workers=workers, **options)


@app.command()
def updater() -> None:
    """Consume events and move each customer's vector (EMA or fold-in), once per event."""
    from observability.tracing import shutdown as shutdown_tracing
    from observability.tracing import tracer_provider
    from observability.updater_metrics import UpdaterMetrics
    from recsys.stores import redis_client
    from stream.updater import Updater

    settings = load_settings()
    metrics = UpdaterMetrics()
    provider = tracer_provider(settings, "recsys-updater")

    def make(settings: Settings, endpoints: Endpoints, bus: EventBus, consumer: Consumer) -> Worker:
        client = redis_client(
            endpoints.require_redis(), settings.redis_timeout_s * 4, cluster=settings.redis_cluster
        )
        tracer = provider.get_tracer("recsys.stream")
        return Updater(settings, client, consumer, bus.producer(), new_dlq_producer=bus.producer,
                       metrics=metrics, tracer=tracer)  # fmt: skip

    try:
        with _metrics_server(settings, "updater", metrics.registry):
            _run_consumer(settings, settings.updater_group, {"redis", "kafka"}, make)
    finally:
        shutdown_tracing(provider)


@app.command()
def archiver() -> None:
    """Append accepted events to the Delta `events` table, exactly once each, and the
    catalog topic's articles to the Delta `items` table (the newest of each)."""
    from observability.archiver_metrics import ArchiverMetrics
    from stream.archiver import Archiver

    settings = load_settings()
    metrics = ArchiverMetrics()

    def make(settings: Settings, endpoints: Endpoints, bus: EventBus, consumer: Consumer) -> Worker:
        return Archiver(settings, consumer, bus.producer(), metrics)

    with _metrics_server(settings, "archiver", metrics.registry):
        _run_consumer(settings, settings.archiver_group, {"kafka"}, make,
                      topics=Archiver.topics(settings))  # fmt: skip


def _run_consumer(
    settings: Settings,
    group: str,
    need: set[Engine],
    make: Callable[[Settings, Endpoints, EventBus, Consumer], Worker],
    *,
    topics: list[str] | None = None,
) -> None:
    """A consumer-group worker: resolve engines, subscribe, run until SIGTERM or Ctrl-C."""
    from recsys.bus import KafkaBus
    from recsys.engines.embedded import EmbeddedEngines

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    topics = topics or [settings.events_topic]
    with EmbeddedEngines(settings, need, before_broker_stop=drain_hook(settings)) as endpoints:
        bus = KafkaBus(endpoints.require_kafka(), settings)
        bus.ensure_topics()
        consumer = bus.consumer(group)
        try:
            worker = make(settings, endpoints, bus, consumer)
            consumer.subscribe(
                topics,
                # The supervisor waits for this: the worker consumes from here on.
                on_assign=lambda _c, parts: _assigned(len(parts)),
                on_revoke=worker.partitions_revoked,
                on_lost=worker.partitions_lost,
            )
            log.info("consuming %s as group %s", ", ".join(topics), group)
            worker.run(stop)
        finally:
            consumer.close()  # the last revoke: what was finished is committed


def _assigned(partitions: int) -> None:
    log.info("partitions assigned: %d", partitions)
    announce_ready()


@contextlib.contextmanager
def _metrics_server(
    settings: Settings, worker: Literal["updater", "archiver"], registry: CollectorRegistry
) -> Iterator[None]:
    """Serve a worker's Prometheus registry over HTTP while it runs, where its settings
    say (RECSYS_<WORKER>_METRICS_HOST and _PORT; port 0: not at all)."""
    from prometheus_client import start_http_server

    host = getattr(settings, f"{worker}_metrics_host")
    port = getattr(settings, f"{worker}_metrics_port")
    if not port:
        yield
        return
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        # Events matter more than their metrics: consume anyway, and say so loudly.
        log.warning("metrics NOT served: %s:%d is taken (%s); set RECSYS_%s_METRICS_PORT",
                    host, port, exc, worker.upper())  # fmt: skip
        yield
        return
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
