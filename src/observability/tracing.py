"""OpenTelemetry tracing: a tracer provider per process, exported by OTLP when an
endpoint is set (Jaeger), to the console when asked, and nowhere otherwise.

No global state is set: the provider is made once and handed to what traces.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from recsys.settings import Settings


def tracer_provider(
    settings: Settings, service: str, exporter: SpanExporter | None = None
) -> trace.TracerProvider:
    """exporter (tests pass an in-memory one) wins over the settings. With nowhere to
    send spans the provider is a no-op one: no span is built only to be dropped."""
    if exporter is None and not settings.otlp_endpoint and not settings.trace_to_console:
        return trace.NoOpTracerProvider()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5))
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def shutdown(provider: trace.TracerProvider) -> None:
    """Flush and stop an SDK provider; a no-op one has nothing to flush."""
    if isinstance(provider, TracerProvider):
        provider.shutdown()
