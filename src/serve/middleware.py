"""Per-request telemetry as plain ASGI middleware: a server span that the route's spans
hang under (continuing the caller's trace when the request carries a W3C `traceparent`),
and the latency histogram by route template."""

from __future__ import annotations

import time
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.telemetry import Telemetry

_W3C: Final = TraceContextTextMapPropagator()
# The headers it reads, as ASGI spells them (lower case, bytes).
_TRACE_HEADERS: Final = frozenset(name.encode() for name in _W3C.fields)


class RequestTelemetry:
    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        if not self.telemetry.tracing:
            try:
                await self.app(scope, receive, send_status)
            finally:
                self._observe(scope, method, status[0], started)
            return
        with self.telemetry.tracer.start_as_current_span(
            f"{method} {scope['path']}", context=incoming_context(scope), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                template = self._observe(scope, method, status[0], started)
                span.update_name(f"{method} {template}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status[0])

    def _observe(self, scope: Scope, method: str, status: int, started: float) -> str:
        """Record the latency by route template (no ids in it keeps the label set small)
        and return the template."""
        route: Any = scope.get("route")
        template = str(getattr(route, "path", "unmatched"))
        self.telemetry.metrics.http_seconds.labels(method, template, str(status)).observe(
            time.perf_counter() - started
        )
        return template


def incoming_context(scope: Scope) -> Context:
    """The W3C trace context the request's headers carry (`traceparent`, `tracestate`),
    as the Kafka consumer reads it off a message: the request span becomes a child of
    the caller's span. Without one, or with a malformed one, the request span starts a
    trace. Baggage is not taken from a request: whatever it held would travel on every
    event the request publishes."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name in _TRACE_HEADERS
    }
    return _W3C.extract(carrier)
