"""The FastAPI application: clients made once in the lifespan, routers per resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST

from observability.api_metrics import Metrics
from observability.experiment_metrics import ExperimentsCollector, export_lease
from observability.key_metrics import KeyExpiryCollector
from observability.tracing import shutdown as shutdown_tracing
from observability.tracing import tracer_provider
from recsys.bus import KafkaBus
from recsys.experiments.definitions import experiments_from_settings
from recsys.experiments.ledger import Ledger
from recsys.index.factory import open_reads
from recsys.settings import Settings
from recsys.stores import async_redis_client, hot_redis_client, redis_client
from recsys.user_store import RedisServingUserStore, RedisUserStore
from serve.access import ACCESS_RESPONSES, Access, require
from serve.catalog_feed import CatalogFeed
from serve.deps import AppState
from serve.live_model import LiveModel
from serve.middleware import RequestTelemetry
from serve.publisher import EventPublisher
from serve.routes import (
    admin,
    catalog_intake,
    event_intake,
    experiments,
    health,
    items,
    models,
    page,
    recommend,
    users,
)
from serve.telemetry import Telemetry

log = logging.getLogger(__name__)


SHUTDOWN_STEP_TIMEOUT_S = 5.0


async def _bounded(step: Awaitable[object], what: str) -> None:
    try:
        await asyncio.wait_for(step, timeout=SHUTDOWN_STEP_TIMEOUT_S)
    except TimeoutError:
        log.warning("shutdown: could not %s within %.0f s", what, SHUTDOWN_STEP_TIMEOUT_S)


def create_app(settings: Settings, *, span_exporter: SpanExporter | None = None) -> FastAPI:
    """settings must name the engines (the CLI resolves embedded ones before calling);
    span_exporter overrides where traces go (tests collect them in memory)."""
    if not settings.redis_url or not settings.kafka_bootstrap_servers:
        raise ValueError("create_app needs resolved redis_url and kafka_bootstrap_servers")
    redis_url, bootstrap = settings.redis_url, settings.kafka_bootstrap_servers
    provider = tracer_provider(settings, "recsys-api", span_exporter)
    telemetry = Telemetry(Metrics(), provider.get_tracer("recsys.serve"))
    # A bad experiments file stops the start here, with the field it got wrong.
    defined = experiments_from_settings(settings)
    ledger = Ledger.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cluster = settings.redis_cluster
        client = async_redis_client(redis_url, settings.redis_timeout_s, cluster=cluster)
        hot_redis = hot_redis_client(redis_url, settings.redis_timeout_s, cluster=cluster)
        bus = KafkaBus(bootstrap, settings)
        publisher = EventPublisher(bus.producer, settings.kafka_produce_timeout_s)
        users = RedisServingUserStore(client, hot_redis, settings.redis_timeout_s)
        feed = CatalogFeed(settings, bus, users, telemetry.metrics)
        # A Qdrant server is read through its async client: a query waiting on the network
        # leaves the event loop to other requests (None: the embedded engine).
        index_reads = open_reads(settings)
        model = LiveModel(
            settings,
            users,
            pinned=defined.pinned_versions(),
            prepare=feed.prepare,
            index_reads=index_reads,
        )
        await model.start()
        feed.start(model.served)
        # /metrics reads the experiments' counters from Redis (on a worker thread), at most
        # once per metrics_cache_s.
        scrape_redis = redis_client(redis_url, settings.redis_timeout_s, cluster=cluster)
        if defined.experiments:
            telemetry.metrics.add_collector(
                ExperimentsCollector(
                    scrape_redis,
                    defined,
                    ledger,
                    cache_s=settings.metrics_cache_s,
                    lease=export_lease(scrape_redis, settings.metrics_export_lease_s),
                )
            )
        # The keys file re-read and expiries warned of, off the request path.
        watch_keys = asyncio.create_task(access.watch(), name="api-keys")
        app.state.recsys = AppState(
            settings,
            client,
            hot_redis,
            model,
            publisher,
            telemetry,
            defined,
            ledger,
            feed,
            scrape_redis,
            users,
            RedisUserStore(scrape_redis),
        )
        try:
            yield
        finally:
            # Every step is bounded: a shutdown that hangs is worse than one that logs.
            watch_keys.cancel()
            await _bounded(feed.stop(), "stop the catalog feed")
            await _bounded(model.stop(), "stop the model poller")
            if index_reads is not None:
                await _bounded(index_reads.close(), "close the Qdrant client")
            await _bounded(asyncio.to_thread(publisher.close), "flush the event producer")
            await _bounded(client.aclose(), "close the Redis client")
            await _bounded(hot_redis.aclose(), "close the hot-path Redis connection")
            await _bounded(asyncio.to_thread(scrape_redis.close), "close the scrape connection")
            await _bounded(asyncio.to_thread(shutdown_tracing, provider), "flush the traces")

    app = FastAPI(
        title="recsys",
        summary="Real-time personalised recommendations",
        version="0.1.0",
        lifespan=lifespan,
        # Starlette's body limit: 413 past a Content-Length over it, or past as many bytes
        # of a body sent without one.
        max_body_size=settings.max_body_bytes,
        # Our own middleware makes the request span and the latency histogram (on the
        # app's provider, never the global one): FastAPI's would be a second of each.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.access = access = Access(settings, telemetry.metrics)
    access.log_policy()
    telemetry.metrics.add_collector(KeyExpiryCollector(lambda: access.keys))
    # Public reads are checked only where the policy asks for it, so open ones keep the hot
    # path free of the dependency; each route of customers' data or writes names its grant
    # itself (serve.access). The page and its files hold no data: always served.
    public = [] if access.public_unchecked else [require("public")]
    responses = {} if access.public_unchecked else ACCESS_RESPONSES
    for module in (recommend, items, users, models, experiments):
        app.include_router(module.router, dependencies=public, responses=responses)
    for module in (page, catalog_intake, event_intake, admin, health):
        app.include_router(module.router)

    # A key granting metrics (the metrics role, or admin) unless metrics_require_key is off.
    scrape = [require("metrics")] if settings.metrics_require_key else []

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        dependencies=scrape,
        responses=ACCESS_RESPONSES if scrape else {},
    )
    async def metrics() -> Response:
        """Prometheus exposition of the API's metrics."""
        body = await asyncio.to_thread(telemetry.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestTelemetry, telemetry=telemetry)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the log keeps it.
        # The route's template, not the path: a path holds customer ids.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.exception("unhandled error on %s %s", request.method, route)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


def app_from_environment() -> FastAPI:
    """The app of one of several server processes (uvicorn's factory): the CLI resolved
    the engines and put them in the environment; the process dies with its supervisor.
    A spawned process, it sets its logging up as the command did its own."""
    import os

    from recsys.engines.process import die_with_parent
    from recsys.logs import setup_logging

    die_with_parent(os.getppid())
    settings = Settings()
    setup_logging(log_format=settings.log_format)
    return create_app(settings)
