"""The log lines every process writes: text as before, or JSON by setting, each with the
trace id of the span current when it was written."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from recsys.logs import TEXT_FORMAT, JsonFormatter, TextFormatter, setup_logging
from recsys.settings import LogFormat


@pytest.fixture
def tracer() -> Tracer:
    # A provider of the SDK of its own: no global one is set (observability.tracing).
    return TracerProvider().get_tracer("test")


def _lines(formatter: logging.Formatter, write: object) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"recsys.test_logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        assert callable(write)
        write(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_a_json_line_parses_and_holds_the_current_spans_trace_id(tracer: Tracer) -> None:
    def write(logger: logging.Logger) -> None:
        with tracer.start_as_current_span("work") as span:
            logger.info("moved %d vectors", 3, extra={"fields": {"moved": 3}})
            context = span.get_span_context()
            written.append((f"{context.trace_id:032x}", f"{context.span_id:016x}"))

    written: list[tuple[str, str]] = []
    (line,) = _lines(JsonFormatter(), write)
    entry = json.loads(line)
    assert (entry["trace_id"], entry["span_id"]) == written[0]
    assert entry["level"] == "INFO" and entry["message"] == "moved 3 vectors"
    assert entry["logger"].startswith("recsys.test_logs") and entry["moved"] == 3
    assert entry["time"].endswith("+00:00")


def test_a_json_line_outside_a_span_has_no_trace_id_and_holds_the_exception() -> None:
    def write(logger: logging.Logger) -> None:
        try:
            raise RuntimeError("broker gone")
        except RuntimeError:
            logger.exception("flush failed")

    (line,) = _lines(JsonFormatter(), write)
    entry = json.loads(line)
    assert "trace_id" not in entry and "span_id" not in entry
    assert entry["level"] == "ERROR" and entry["message"] == "flush failed"
    assert "RuntimeError: broker gone" in entry["exception"]


def test_a_text_line_is_unchanged_outside_a_span_and_carries_the_trace_id_inside(
    tracer: Tracer,
) -> None:
    record = logging.LogRecord("recsys.x", logging.WARNING, __file__, 1, "slow: %s", ("a",), None)
    assert TextFormatter().format(record) == logging.Formatter(TEXT_FORMAT).format(record)

    def write(logger: logging.Logger) -> None:
        with tracer.start_as_current_span("work") as span:
            logger.warning("slow")
            written.append(f"{span.get_span_context().trace_id:032x}")

    written: list[str] = []
    (line,) = _lines(TextFormatter(), write)
    pattern = r"\S+ \S+ WARNING recsys\.test_logs\.\d+: slow trace_id=(\w{32}) span_id=\w{16}"
    match = re.fullmatch(pattern, line)
    assert match is not None and match[1] == written[0], line


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = ("httpx", "confluent_kafka", "py4j", "recsys.audit")
    levels = {name: logging.getLogger(name).level for name in named}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("root_restored")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_setting_chooses_the_format_of_every_line(
    log_format: LogFormat, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    setup_logging("WARNING", log_format)
    logging.getLogger("recsys.somewhere").warning("disk at %d%%", 91)
    # The audit line shows whatever the level asked for.
    logging.getLogger("recsys.audit").info("action=promote")
    first, second = capsys.readouterr().err.splitlines()
    if log_format == "json":
        assert json.loads(first)["message"] == "disk at 91%"
        assert json.loads(second)["logger"] == "recsys.audit"
    else:
        assert first.endswith(" WARNING recsys.somewhere: disk at 91%")
        assert second.endswith(" INFO recsys.audit: action=promote")
