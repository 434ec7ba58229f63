"""Erasure against real Valkey, Delta tables and Spark batch runs: the customer's keys,
rows and factors are gone, the answer says what went, and neither the next batch run
(whose CSVs still hold them) nor a promotion replay brings them back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from deltalake import DeltaTable
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession

from batch.pipeline import BatchReport, run_batch
from recsys import keys
from recsys.apply import EventApplier
from recsys.erasure import customer_hash, erase_customer, erased_before
from recsys.events import Event
from recsys.experiments.ledger import Impression, Ledger, Purchase, new_recommendation_id
from recsys.hm_schema import TRANSACTIONS_FILE
from recsys.model_store import read_factors
from recsys.progress import Steps
from recsys.replay import unseen_purchases
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from serve.app import create_app
from stream.events_table import EVENTS_SCHEMA, append_new, ensure_events_table
from support import apply_live, isolated


@pytest.fixture(scope="module")
def own(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, redis.Redis]]:
    # Small files, so the customer tables are written in several customer_id ranges.
    small_files = settings.model_copy(update={"lake_file_rows": 2_000})
    with isolated(small_files, tmp_path_factory.mktemp("erasure") / "data", db=14) as pair:
        yield pair


def _batch(own: tuple[Settings, redis.Redis], input_dir: Path, spark: SparkSession) -> BatchReport:
    with Steps(enabled=False) as steps:
        return run_batch(own[0], input_dir, RedisUserStore(own[1]), steps, spark)


def _archive(settings: Settings, customers: list[str], article: str, when: datetime) -> None:
    """Purchases the API accepted, as the archiver writes them (received when stamped)."""
    ensure_events_table(settings.events_table)
    rows = [
        {
            **Event(customer_id=c, article_id=article, ts=when).model_dump(),
            "kafka_partition": 0,
            "kafka_offset": n,
            "received_at": when,
        }
        for n, c in enumerate(customers)
    ]
    append_new(settings.events_table, pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA))


def _rows_of(lake_dir: Path, customer: str) -> dict[str, int]:
    found = {}
    for path in sorted(lake_dir.glob("*/*/_delta_log")):
        table = DeltaTable(str(path.parent))
        if "customer_id" in table.schema().to_arrow().names:
            frame = table.to_pandas(columns=["customer_id"])
            found[f"{path.parent.parent.name}.{path.parent.name}"] = int(
                (frame["customer_id"] == customer).sum()
            )
    return found


def _files_holding(lake_dir: Path, customer: str) -> list[str]:
    """Every Parquet file on disk under a customer table, referenced or not, that still
    holds a row of the customer."""
    held = []
    for log_dir in sorted(lake_dir.glob("*/*/_delta_log")):
        for file in sorted(log_dir.parent.rglob("*.parquet")):
            if "customer_id" not in pq.read_schema(file).names:
                continue
            ids = pq.read_table(file, columns=["customer_id"]).column("customer_id")
            if customer in set(ids.to_pylist()):
                held.append(str(file.relative_to(lake_dir)))
    return held


def _ranges_apart(lake_dir: Path, name: str) -> bool:
    """The table's files hold customer_id ranges that meet at most at their ends (a
    customer whose rows a file's row limit cut), each in its statistics."""
    layer, table = name.split(".")
    actions = DeltaTable(str(lake_dir / layer / table)).get_add_actions(flatten=True)
    frame = pa.table(actions).to_pandas()
    spans = sorted(zip(frame["min.customer_id"], frame["max.customer_id"], strict=True))
    return len(spans) > 1 and all(a[1] <= b[0] for a, b in pairwise(spans))


def _files_rewritten(lake_dir: Path, name: str) -> int:
    layer, table = name.split(".")
    history = DeltaTable(str(lake_dir / layer / table)).history(5)
    newest = next(entry for entry in history if entry["operation"] == "DELETE")
    return int(newest["operationMetrics"]["num_removed_files"])


def test_an_erased_customer_stays_erased_through_the_next_batch(
    own: tuple[Settings, redis.Redis], input_dir: Path, spark: SparkSession,
    transactions: pd.DataFrame,
) -> None:  # fmt: skip
    mine, client = own
    ranked = transactions["customer_id"].value_counts().index
    gone, kept = str(ranked[4]), str(ranked[5])
    article = str(transactions["article_id"].iloc[0])
    _archive(mine, [gone, kept], article, datetime.now(UTC) - timedelta(minutes=5))
    first = _batch(own, input_dir, spark)
    assert client.exists(keys.user_vector(first.version, gone))
    before = _rows_of(mine.lake_dir, gone)
    assert before["bronze.transactions"] > 0 and before["bronze.events"] == 1
    # Every family of keys a customer can have exists: an event applied, an impression
    # shown, a purchase credited (the erasure deletes them by name).
    event = Event(event_id=f"erase-{gone}", customer_id=gone, article_id=article)
    assert apply_live(EventApplier(mine, client), first.version, [event]) == (1, 0)
    ledger, rec = Ledger(3600), new_recommendation_id()
    ledger.record_impression_sync(client, Impression(rec, "exp", "control", gone, [article]))
    assert ledger.attribute_sync(client, Purchase(event.event_id, gone, article, rec))
    held = set(client.scan_iter(match=f"*{{{gone}}}*"))
    assert len(held) == 8, held
    clustered = ("bronze.transactions", "silver.interactions", "silver.transactions")
    assert [_ranges_apart(mine.lake_dir, name) for name in clustered] == [True] * 3

    assert _files_holding(mine.lake_dir, gone)
    # Retention 0 so that this erasure's vacuum also removes the files it just replaced
    # (by default they go at the first vacuum after RECSYS_LAKE_RETENTION_HOURS).
    report = erase_customer(
        mine.model_copy(update={"lake_retention_hours": 0}), RedisUserStore(client), gone
    )

    # The answer says what went, and it all went.
    assert report.redis_keys == len(held)
    assert report.delta_rows == {name: n for name, n in before.items() if n}
    # A clustered table's delete rewrote the file (or two) whose range held the customer.
    assert all(1 <= _files_rewritten(mine.lake_dir, name) <= 2 for name in clustered)
    assert report.factor_rows == {first.version: 1}
    assert not list(client.scan_iter(match=f"*{gone}*"))
    assert not any(_rows_of(mine.lake_dir, gone).values())
    assert report.vacuumed_files > 0
    assert _files_holding(mine.lake_dir, gone) == []
    # The record that keeps them out holds a hash, not the id.
    assert not any(gone.encode() in k or gone.encode() in v for k, v in client.hgetall(
        "rs:erased").items())  # fmt: skip
    assert client.hget("rs:erased", customer_hash(gone)) is not None
    factors = read_factors(mine.models_dir, first.version)
    assert gone not in set(factors["user_ids"]) and kept in set(factors["user_ids"])
    assert len(factors["user_ids"]) == len(factors["user_factors"])
    # Nobody else lost anything.
    assert client.exists(keys.user_vector(first.version, kept))
    assert _rows_of(mine.lake_dir, kept)["bronze.events"] == 1

    # The CSVs still hold the customer: the next batch must not bring them back.
    assert (pd.read_csv(input_dir / TRANSACTIONS_FILE)["customer_id"] == gone).any()
    second = _batch(own, input_dir, spark)
    assert not client.exists(keys.user_vector(second.version, gone))
    assert client.exists(keys.user_vector(second.version, kept))
    assert not any(_rows_of(mine.lake_dir, gone).values())
    assert gone not in set(read_factors(mine.models_dir, second.version)["user_ids"])

    # A replay of archived events skips them too, while a later purchase counts again.
    erased = erased_before(mine.lake_dir)
    _archive(mine, [gone], article, datetime.now(UTC) - timedelta(days=1))
    replayed = unseen_purchases(mine.events_table, None, datetime(2000, 1, 1, tzinfo=UTC), erased)
    assert gone not in set(replayed["customer_id"])
    _archive(mine, [gone], article, datetime.now(UTC) + timedelta(seconds=5))
    replayed = unseen_purchases(mine.events_table, None, datetime(2000, 1, 1, tzinfo=UTC), erased)
    assert list(replayed["customer_id"]).count(gone) == 1

    # Erasing twice removes nothing more.
    again = erase_customer(mine, RedisUserStore(client), gone)
    assert again.factor_rows == {} and again.redis_keys == 0
    assert set(again.delta_rows) == {"bronze.events"}  # the returning customer's purchase


def test_delete_users_answers_with_what_was_removed(
    own: tuple[Settings, redis.Redis], transactions: pd.DataFrame
) -> None:
    mine, client = own
    customer = str(transactions["customer_id"].value_counts().index[7])
    with TestClient(create_app(mine)) as api:
        body = api.delete(f"/users/{customer}").json()
        assert body["customer_id"] == customer
        assert body["redis_keys"] > 0 and sum(body["delta_rows"].values()) > 0
        assert api.delete("/users/bad id!").status_code == 422
    assert np.isfinite(float(client.hget("rs:erased", customer_hash(customer)) or "nan"))
