"""Logging set-up for the commands (the library modules only create loggers)."""

from __future__ import annotations

import logging


class _QuietPy4j(logging.Filter):
    """py4j reports every reconnect to the Spark JVM at INFO with a traceback, some of it
    through the root logger; its warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "py4j" not in record.pathname


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietPy4j())
    # librdkafka and httpx are chatty at INFO; their warnings still show.
    for noisy in ("httpx", "confluent_kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
