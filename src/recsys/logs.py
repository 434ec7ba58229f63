"""Logging set-up for the commands (the library modules only create loggers)."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # librdkafka and httpx are chatty at INFO; their warnings still show.
    for noisy in ("httpx", "confluent_kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
