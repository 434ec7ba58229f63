"""The API's producer against a broker that restarts without its state (the embedded one
keeps none): the idempotent producer would never be acknowledged again; it is replaced
after a delivery times out, so the client's retry succeeds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from recsys.bus import KafkaBus, ensure_topics
from recsys.engines.process import free_port
from recsys.engines.tansu import start_tansu
from recsys.settings import Settings
from serve.publisher import REPLACE_EVERY_S, EventPublisher, PublishError


def test_a_restarted_broker_is_written_to_again(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    broker, bootstrap = start_tansu(tmp_path, timeout=20, port=port)
    own = settings.model_copy(
        update={"kafka_bootstrap_servers": bootstrap, "kafka_produce_timeout_s": 1.0}
    )
    ensure_topics(bootstrap, own)
    publisher = EventPublisher(KafkaBus(bootstrap, own).producer, own.kafka_produce_timeout_s)

    async def publish(key: str) -> None:
        await publisher.publish(own.events_topic, key=key, value=b"{}")

    def failures_until_acked(key: str, within_s: float) -> int:
        """Publish as a client does: again after each 503, until acknowledged."""
        failures = 0
        deadline = time.monotonic() + within_s
        while True:
            try:
                asyncio.run(publish(key))
                return failures
            except PublishError:
                failures += 1
                assert time.monotonic() < deadline, f"{key}: never acknowledged"

    try:
        # A new producer's first message may outlast 1 s on a busy machine.
        failures_until_acked("before", 3 * REPLACE_EVERY_S + 10)
        broker.stop()
        broker, _ = start_tansu(tmp_path, timeout=20, port=port)
        ensure_topics(bootstrap, own)
        # The old producer's message times out; the client's next try succeeds.
        assert failures_until_acked("after", 3 * REPLACE_EVERY_S + 10) >= 1
    finally:
        publisher.close(1)
        broker.stop()
