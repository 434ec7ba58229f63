"""Logging set-up for the commands (the library modules only create loggers): text or
JSON lines, each carrying the trace id of the span current when it was written."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry import trace

from recsys.settings import LogFormat

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The record attribute (`extra={FIELDS: {...}}`) whose items a JSON line holds as keys
# of its own, beside the message that spells them out for the text format.
FIELDS: Final = "fields"
# Lines of these loggers are written at INFO whatever the level asked for.
ALWAYS_INFO: Final = ("recsys.audit",)


class _QuietPy4j(logging.Filter):
    """py4j reports every reconnect to the Spark JVM at INFO with a traceback, some of it
    through the root logger; its warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "py4j" not in record.pathname


def trace_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id in hex (as W3C traceparent spells them),
    or None outside a span (or with tracing off)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then ` trace_id=... span_id=...` inside a span."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        # Formatted in the thread that logs (a StreamHandler does), so the span current
        # there is the record's; the ids go before any traceback.
        line = super().formatMessage(record)
        ids = trace_ids()
        return line if ids is None else f"{line} trace_id={ids[0]} span_id={ids[1]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    record's structured fields, trace_id and span_id inside a span, and the exception's
    text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        ids = trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    logging.basicConfig(level=level.upper())
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(log_format))
        if not any(isinstance(f, _QuietPy4j) for f in handler.filters):
            handler.addFilter(_QuietPy4j())
    # librdkafka and httpx are chatty at INFO; their warnings still show.
    for noisy in ("httpx", "confluent_kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ALWAYS_INFO:
        logging.getLogger(name).setLevel(logging.INFO)
