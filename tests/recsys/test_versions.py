"""Model versions: a candidate, promotion that replays what happened after the cutoff,
rollback, and a running API switching versions without a restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport, run_batch
from recsys import keys
from recsys.apply import EventApplier
from recsys.ema import ema_update
from recsys.events import Event
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from recsys.vectors import decode
from recsys.versions import VersionError, list_versions, promote, rollback
from serve.app import create_app
from stream.events_table import EVENTS_SCHEMA, append_new, ensure_events_table
from support import apply_live, isolated

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, redis.Redis]]:
    with isolated(settings, tmp_path / "data", db=4) as pair:
        yield pair


def _batch(
    settings: Settings, input_dir: Path, client: redis.Redis, spark: SparkSession, **kw: bool
) -> BatchReport:
    with Steps(enabled=False) as steps:
        return run_batch(settings, input_dir, RedisUserStore(client), steps, spark, **kw)


def _archive(settings: Settings, events: list[Event]) -> None:
    ensure_events_table(settings.events_table)
    rows = [
        {**e.model_dump(), "kafka_partition": 0, "kafka_offset": i} for i, e in enumerate(events)
    ]
    append_new(settings.events_table, pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA))


def test_promotion_replays_events_after_the_cutoff_and_rollback_returns(
    own: tuple[Settings, redis.Redis],
    input_dir: Path,
    transactions: pd.DataFrame,
    spark: SparkSession,
) -> None:
    settings, client = own
    first = _batch(settings, input_dir, client, spark)
    assert RedisUserStore(client).live_version() == first.version
    second = _batch(settings, input_dir, client, spark, promote_new=False)
    assert RedisUserStore(client).live_version() == first.version
    statuses = {
        i.manifest.version: i.status for i in list_versions(settings, RedisUserStore(client))
    }
    assert statuses == {first.version: "live", second.version: "candidate"}

    # A customer buys after the second version's data was cut.
    customer = str(transactions["customer_id"].value_counts().index[2])
    article = str(transactions["article_id"].value_counts().index[-1])
    ts = datetime.now(UTC) + timedelta(seconds=1)
    event = Event(event_id="after-cutoff-1", customer_id=customer, article_id=article, ts=ts)
    # And a late arrival: stamped before the cutoff, archived after the batch read the table.
    late = Event(
        event_id="late-1",
        customer_id=str(transactions["customer_id"].value_counts().index[3]),
        article_id=article,
        ts=datetime(2019, 1, 1, tzinfo=UTC),
    )
    _archive(settings, [event, late])

    user_key = keys.user_vector(second.version, customer)
    before = decode(client.get(user_key))
    item = decode(client.get(keys.item_vector(second.version, article)))
    assert before is not None and item is not None
    report = promote(settings, RedisUserStore(client), second.version)
    assert (report.events, report.applied) == (2, 2)
    assert RedisUserStore(client).live_version() == second.version
    np.testing.assert_allclose(
        decode(client.get(user_key)), ema_update(before, item, settings.ema_rate, 1.0), rtol=1e-5
    )
    # Promoting again replays nothing twice.
    assert promote(settings, RedisUserStore(client), second.version).applied == 0

    previous, back = rollback(settings, RedisUserStore(client))
    assert previous == first.version
    assert RedisUserStore(client).live_version() == first.version
    # The old version is brought up to date too: it learns the purchases on the way back.
    assert back.applied == 2
    with pytest.raises(VersionError, match="no previous version"):
        rollback(settings, RedisUserStore(client))


def test_a_rollback_to_a_version_live_weeks_ago_applies_each_missed_event_once(
    own: tuple[Settings, redis.Redis],
    input_dir: Path,
    transactions: pd.DataFrame,
    spark: SparkSession,
) -> None:
    """A version remembers what it applied by broker time in state kept for
    RECSYS_CUSTOMER_STATE_RETENTION_DAYS (365), not for days: rolled back to after
    weeks, it applies exactly the events it missed, each once."""
    settings, client = own
    first = _batch(settings, input_dir, client, spark)
    second = _batch(settings, input_dir, client, spark, promote_new=False)
    customer = f"weeks-{uuid.uuid4().hex[:8]}"  # new: its counts are these events alone
    article = str(transactions["article_id"].value_counts().index[-1])
    now = datetime.now(UTC)

    def bought(days_ago: int, name: str) -> Event:
        at = now - timedelta(days=days_ago)
        return Event(event_id=name, customer_id=customer, article_id=article, ts=at)

    # While the first version is live, the updater applies two purchases (received 30
    # and 20 days ago, each at its own time) and the archiver keeps them.
    seen = [bought(30, "seen-30"), bought(20, "seen-20")]
    applier = EventApplier(settings, client)
    assert apply_live(applier, first.version, seen) == (2, 0)
    _archive(settings, seen)
    state = keys.applied_events(first.version, customer)
    assert client.ttl(state) > 300 * 86_400  # remembered for a year, not 14 days

    # The second version goes live (catching up on both), and one more purchase 16 days
    # ago reaches it alone.
    assert promote(settings, RedisUserStore(client), second.version).applied == 2
    missed = [bought(16, "missed-16")]
    assert apply_live(applier, second.version, missed) == (1, 0)
    _archive(settings, missed)

    # Rolled back to the first version: the replay reads all three, applies the one it
    # missed and skips the two it had.
    previous, back = rollback(settings, RedisUserStore(client))
    assert previous == first.version
    assert (back.events, back.applied, back.duplicates) == (3, 1, 2)
    assert client.hget(keys.profile(first.version, customer), "purchases") == b"3"
    assert client.hget(keys.profile(second.version, customer), "purchases") == b"3"


def test_unknown_version_is_refused(own: tuple[Settings, redis.Redis]) -> None:
    settings, client = own
    with pytest.raises(VersionError, match="no model version v-nope"):
        promote(settings, RedisUserStore(client), "v-nope")


@pytest.mark.parametrize("backend", ["edge", "qdrant-client"])
def test_running_api_switches_to_the_new_version_without_failing(
    own: tuple[Settings, redis.Redis],
    input_dir: Path,
    transactions: pd.DataFrame,
    spark: SparkSession,
    backend: str,
) -> None:
    """With Qdrant Edge, and with a Qdrant server through qdrant-client (its in-process
    local mode): each version its own collection, the alias following the live one."""
    settings, client = own
    update: dict[str, object] = {"model_poll_interval_s": 0.1}
    if backend == "qdrant-client":
        update |= {"qdrant_url": ":memory:", "qdrant_collection": f"items_{uuid.uuid4().hex[:8]}"}
    settings = settings.model_copy(update=update)
    first = _batch(settings, input_dir, client, spark)
    customer = str(transactions["customer_id"].value_counts().index[0])
    with TestClient(create_app(settings)) as api:
        assert api.get(f"/recommend/{customer}").json()["model_version"] == first.version
        second = _batch(settings, input_dir, client, spark)
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and second.version not in seen:
            response = api.get(f"/recommend/{customer}")
            assert response.status_code == 200
            assert response.json()["source"] == "personalized"
            seen.add(response.json()["model_version"])
        assert second.version in seen
    if backend == "qdrant-client":
        from recsys.index.qdrant_server import QdrantServerBackend, client_for

        index = QdrantServerBackend(client_for(settings), settings.qdrant_collection)
        assert index.live() == index.collection(second.version)
        rollback(settings, RedisUserStore(client))
        assert index.live() == index.collection(first.version)


def test_a_worse_version_is_not_promoted_unless_forced(
    own: tuple[Settings, redis.Redis], input_dir: Path, spark: SparkSession
) -> None:
    from recsys.model_store import read_manifest, write_manifest

    settings, client = own
    first = _batch(settings, input_dir, client, spark)
    manifest = read_manifest(settings.models_dir, first.version)
    assert 0 < manifest.metrics["holdout_ndcg_at_10"] < 1
    # Pretend the live model was excellent: the next run cannot match it.
    write_manifest(
        settings.models_dir,
        manifest.model_copy(update={"metrics": {**manifest.metrics, "holdout_ndcg_at_10": 0.99}}),
    )
    second = _batch(settings, input_dir, client, spark)
    assert not second.promoted
    assert "below live 0.9900" in second.gate_reason
    assert RedisUserStore(client).live_version() == first.version
    listed = list_versions(settings, RedisUserStore(client))
    assert second.version in {i.manifest.version for i in listed if i.status == "candidate"}
    third = _batch(settings, input_dir, client, spark, force=True)
    assert third.promoted and third.gate_reason.startswith("forced")
    assert RedisUserStore(client).live_version() == third.version
