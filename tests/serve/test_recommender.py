"""The ranking path awaits the item index: against a slow Qdrant server (a stub of its REST
API, tests/qdrant_stub.py) requests in flight wait together, and the event loop stays free
for others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from opentelemetry.trace import NoOpTracer

from observability.api_metrics import Metrics
from qdrant_stub import QdrantStub
from recsys.index.base import ItemFilter
from recsys.index.factory import open_backend, open_reads
from recsys.model_store import Manifest
from recsys.settings import Settings
from recsys.trending_lists import TrendingLists
from recsys.user_store import CustomerState
from serve.live_model import ServedModel
from serve.recommender import Ask, Ranked, rank
from serve.telemetry import Telemetry
from support import ticks_during

pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")

DELAY_S = 0.15
REQUESTS = 4
VECTOR = [1.0, 0.0, 0.5, 0.0]
HIT = {"id": 1, "version": 0, "score": 1.5, "payload": {"article_id": "a1"}, "vector": VECTOR}
BOUGHT = {"id": 2, "payload": {"article_id": "b1"}, "vector": VECTOR}


class OneCustomer:
    """The user store as ranking reads it: one customer with a vector and a purchase."""

    async def customer_state(self, version: str, customer_id: str) -> CustomerState:
        return CustomerState(np.asarray(VECTOR, dtype=np.float32), ["b1"], None)


@pytest.fixture
def stub() -> Iterator[QdrantStub]:
    server = QdrantStub(delay_s=DELAY_S, points=[HIT], records=[BOUGHT])
    server.collections.add("items_v1")
    yield server
    server.close()


def test_requests_wait_on_a_slow_index_together_and_leave_the_loop_free(
    stub: QdrantStub,
) -> None:
    settings = Settings.model_validate({"qdrant_url": stub.url, "qdrant_collection": "items"})
    telemetry = Telemetry(Metrics(), NoOpTracer())
    ask = Ask(k=5, rules=ItemFilter(), explain_top_k=1)  # a query, then the purchases' vectors

    async def run() -> tuple[list[Ranked], float, int]:
        reads = open_reads(settings)
        try:
            model = ServedModel(
                version="v1",
                index=open_backend(settings, reads=reads).open("v1"),
                trending=TrendingLists(overall=[]),
                manifest=Manifest.model_construct(version="v1", created_at=datetime.now(UTC)),
            )
            started = time.perf_counter()
            ranked, ticks = await ticks_during(
                asyncio.gather(
                    *(rank(model, OneCustomer(), f"c{i}", ask, telemetry) for i in range(REQUESTS))
                )
            )
            elapsed = time.perf_counter() - started
            return list(ranked), elapsed, ticks
        finally:
            if reads is not None:
                await reads.close()

    ranked, elapsed, ticks = asyncio.run(run())
    for one in ranked:
        assert (one.source, one.fallback_reason) == ("personalized", None)
        assert [(i.article_id, i.score) for i in one.items] == [("a1", 1.5)]
        assert one.explanations is not None
        assert [c["article_id"] for c in one.explanations["a1"]] == ["b1"]
    # Each request waits twice (query, then vectors): together that is two delays, where
    # requests served one after another would take 2 x REQUESTS.
    assert elapsed < 4 * DELAY_S, elapsed
    assert ticks >= DELAY_S / 0.01, ticks
    assert len(stub.sent("POST", "/points/query")) == REQUESTS
