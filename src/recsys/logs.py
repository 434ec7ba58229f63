"""Logging set-up for the commands (the library modules only create loggers)."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # librdkafka and httpx are chatty at INFO, and py4j logs every reconnect to the Spark
    # JVM there with a traceback; their warnings still show.
    for noisy in ("httpx", "confluent_kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
