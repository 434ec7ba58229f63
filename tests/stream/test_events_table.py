"""The events table: partitioned by the day received, a flush merged within its dedupe
window, closed days compacted, a table archived before partitioning still merged."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from recsys.events import RECEIVED_AT, RECEIVED_DATE
from recsys.replay import unseen_purchases
from recsys.tables import DELTA_TABLES
from stream.events_table import (
    DEDUPE_DAYS,
    EVENTS_SCHEMA,
    append_new,
    compact_closed_days,
    ensure_events_table,
    is_partitioned,
)

DAY = date(2026, 3, 10)


def _rows(ids: list[str], day: date | None = DAY) -> pa.Table:
    return pa.Table.from_pylist(
        [{"event_id": i, "event_type": "purchase", "customer_id": "c1", "article_id": "0108775001",
          "ts": datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=n), "schema_version": 1,
          "kafka_partition": 0, "kafka_offset": n, RECEIVED_DATE: day}
         for n, i in enumerate(ids)],
        schema=EVENTS_SCHEMA,
    )  # fmt: skip


def _ids(path: Path) -> list[str]:
    return sorted(
        DeltaTable(str(path)).to_pyarrow_table(columns=["event_id"]).column(0).to_pylist()
    )


def test_a_flush_lands_in_its_days_and_skips_what_its_window_holds(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ensure_events_table(path)
    assert is_partitioned(path)
    assert append_new(path, _rows(["a", "b"])) == 2
    # A redelivery on the same day, and a retry the next day: both inside the window.
    assert append_new(path, _rows(["a", "c"])) == 1
    assert append_new(path, _rows(["b", "d"], DAY + timedelta(days=DEDUPE_DAYS))) == 1
    assert _ids(path) == ["a", "b", "c", "d"]
    folders = {p.name for p in path.iterdir() if p.is_dir() and p.name != "_delta_log"}
    assert folders == {f"{RECEIVED_DATE}={DAY}", f"{RECEIVED_DATE}={DAY + timedelta(days=1)}"}
    # Rows without a day (by hand, or an older archiver) get today's.
    assert append_new(path, _rows(["e"], None)) == 1
    assert (path / f"{RECEIVED_DATE}={datetime.now(UTC).date()}").is_dir()


def test_a_table_archived_before_partitioning_is_still_merged(tmp_path: Path) -> None:
    path = tmp_path / "events"
    legacy = EVENTS_SCHEMA.remove(EVENTS_SCHEMA.get_field_index(RECEIVED_DATE))
    write_deltalake(str(path), _rows(["a"]).drop_columns([RECEIVED_DATE]).cast(legacy))
    ensure_events_table(path)  # leaves it as it is
    assert not is_partitioned(path)
    assert append_new(path, _rows(["a", "b"])) == 1
    assert _ids(path) == ["a", "b"]


def test_closed_days_are_compacted_and_a_replay_stays_exact(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ensure_events_table(path)
    for n in range(4):  # four flushes of a closed day: four files, customers c4 to c1
        rows = _rows([f"old-{n}"])
        rows = rows.set_column(rows.schema.get_field_index("customer_id"), "customer_id",
                               pa.array([f"c{4 - n}"]))  # fmt: skip
        append_new(path, rows)
        time.sleep(0.005)
    seen = DeltaTable(str(path)).version()
    append_new(path, _rows(["today-0"], DAY + timedelta(days=3)))
    time.sleep(0.005)
    append_new(path, _rows(["today-1"], DAY + timedelta(days=3)))
    assert compact_closed_days(path, today=DAY + timedelta(days=3)) == 4
    table = DeltaTable(str(path))
    per_day = [p.split("/")[-2] for p in table.file_uris()]
    assert per_day.count(f"{RECEIVED_DATE}={DAY}") == 1
    assert per_day.count(f"{RECEIVED_DATE}={DAY + timedelta(days=3)}") == 2  # today: untouched
    # The closed day is sorted by customer, its id range in the file's statistics.
    (compacted,) = [u for u in table.file_uris() if f"{RECEIVED_DATE}={DAY}/" in u]
    assert pq.read_table(compacted).column("customer_id").to_pylist() == ["c1", "c2", "c3", "c4"]
    stats = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    (day_stats,) = [a for a in stats if a[f"partition.{RECEIVED_DATE}"] == DAY]
    assert (day_stats["min.customer_id"], day_stats["max.customer_id"]) == ("c1", "c4")
    assert len(_ids(path)) == 6
    # The compacted file is new to the version trained at `seen`, its rows are not.
    replayed = unseen_purchases(path, seen, datetime(2000, 1, 1, tzinfo=UTC))
    assert sorted(replayed["event_id"]) == ["today-0", "today-1"]
    assert compact_closed_days(path, today=DAY + timedelta(days=3)) == 0  # nothing left to do
    # After the retention the replaced files go; the replay falls back to the cutoff.
    assert DELTA_TABLES.vacuum(path, retention_hours=0) == 4
    assert len(_ids(path)) == 6
    fallback = unseen_purchases(path, seen, datetime(2026, 2, 28, tzinfo=UTC))
    assert len(fallback) == 6  # every event after the cutoff
    assert unseen_purchases(path, seen, datetime(2026, 3, 2, tzinfo=UTC)).empty


def test_a_table_archived_before_received_at_gains_it_and_still_replays(tmp_path: Path) -> None:
    """An archive written before the broker time was kept: the column is added, new rows
    carry it, old rows replay as received at the end of their day."""
    path = tmp_path / "events"
    old_schema = EVENTS_SCHEMA.remove(EVENTS_SCHEMA.get_field_index(RECEIVED_AT))
    write_deltalake(str(path), _rows(["old"]).drop_columns([RECEIVED_AT]).cast(old_schema),
                    partition_by=[RECEIVED_DATE])  # fmt: skip
    ensure_events_table(path)
    assert RECEIVED_AT in DeltaTable(str(path)).schema().to_arrow().names
    at = datetime(2026, 3, 11, 8, 30, tzinfo=UTC)
    new = _rows(["new"], DAY + timedelta(days=1)).set_column(
        EVENTS_SCHEMA.get_field_index(RECEIVED_AT), RECEIVED_AT,
        pa.array([at], pa.timestamp("us", tz="UTC")),
    )  # fmt: skip
    assert append_new(path, new) == 1
    replayed = unseen_purchases(path, None, datetime(2000, 1, 1, tzinfo=UTC))
    stamps = dict(zip(replayed["event_id"], replayed[RECEIVED_AT], strict=True))
    assert stamps["new"].to_pydatetime() == at
    end_of_day = datetime.combine(DAY + timedelta(days=1), datetime.min.time(), UTC)
    assert stamps["old"].to_pydatetime() == end_of_day - timedelta(milliseconds=1)
