"""Per-request telemetry as plain ASGI middleware: a server span that the route's spans
hang under, and the latency histogram by route template."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.telemetry import Telemetry


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
            f"{method} {scope['path']}", kind=SpanKind.SERVER
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
