"""What the request path reports to: the app's metrics and its tracer, in one handle."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, Tracer
from prometheus_client import Histogram

from observability.api_metrics import Metrics

# The diversity score is measured on one result list in this many (MMR or not).
DIVERSITY_SAMPLE_EVERY = 16


class Telemetry:
    def __init__(self, metrics: Metrics, tracer: Tracer) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self._requests = itertools.count()
        # With tracing off no span is made at all (even a no-op one costs a context
        # switch of the current span).
        self.tracing = not isinstance(tracer, NoOpTracer)

    def sample_diversity(self) -> bool:
        return next(self._requests) % DIVERSITY_SAMPLE_EVERY == 0

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Span]:
        """A child of the current span (the request's)."""
        if not self.tracing:
            return nullcontext(INVALID_SPAN)
        return self.tracer.start_as_current_span(name, attributes=attributes)

    @contextmanager
    def timer(self, histogram: Histogram) -> Iterator[None]:
        """Observe the block's wall time, also when it raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            histogram.observe(time.perf_counter() - started)

    def redis(self, operation: str) -> Any:
        return self.timer(self.metrics.redis_seconds.labels(operation))
