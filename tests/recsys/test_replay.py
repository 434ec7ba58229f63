"""What a promotion replays: the rows the events table gained after the version a batch
read, found from the files added since (read one at a time), exact across an erasure's
rewrite, and the training cutoff where that version's files are gone."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from recsys.replay import unseen_chunks, unseen_purchases
from stream.events_table import EVENTS_SCHEMA, append_new, ensure_events_table

START = datetime(2025, 1, 1, tzinfo=UTC)


def _rows(customer: str, first: int, n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [{"event_id": f"{customer}-{i}", "event_type": "purchase", "customer_id": customer,
          "article_id": "0108775001", "ts": START + timedelta(minutes=i), "schema_version": 1,
          "kafka_partition": 0, "kafka_offset": i} for i in range(first, first + n)],
        schema=EVENTS_SCHEMA,
    )  # fmt: skip


def _append(path: Path, rows: pa.Table) -> None:
    # Files are replayed in commit order, told by their modification time (ms): the
    # archiver's flushes are seconds apart, a test's appends need a moment.
    append_new(path, rows)
    time.sleep(0.005)


def _ids(path: Path, version: int | None, since: datetime = START) -> list[str]:
    frame = unseen_purchases(path, version, since)
    return [] if frame.empty else list(frame["event_id"])


def test_only_what_was_added_after_the_version_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ensure_events_table(path)
    _append(path, _rows("a", 0, 3))
    seen = DeltaTable(str(path)).version()
    _append(path, _rows("a", 2, 3))  # a-2 redelivered: the merge keeps one
    _append(path, _rows("b", 0, 2))
    assert _ids(path, seen) == ["a-3", "a-4", "b-0", "b-1"]
    # One committed file at a time, in commit order.
    assert [list(f["event_id"]) for f in unseen_chunks(path, seen, START)] == [
        ["a-3", "a-4"], ["b-0", "b-1"]
    ]  # fmt: skip
    assert _ids(path, -1) == ["a-0", "a-1", "a-2", "a-3", "a-4", "b-0", "b-1"]


def test_a_rewrite_after_the_version_replays_nothing_it_copied(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ensure_events_table(path)
    _append(path, pa.concat_tables([_rows("a", 0, 3), _rows("gone", 0, 2)]))
    seen = DeltaTable(str(path)).version()
    # An erasure deletes one customer's rows: the file is rewritten with a's rows in it.
    DeltaTable(str(path)).delete("customer_id = 'gone'")
    _append(path, _rows("a", 3, 1))
    assert _ids(path, seen) == ["a-3"]


def test_a_vacuumed_version_falls_back_to_the_cutoff(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ensure_events_table(path)
    _append(path, _rows("a", 0, 4))
    seen = DeltaTable(str(path)).version()
    DeltaTable(str(path)).delete("event_id = 'a-0'")
    DeltaTable(str(path)).vacuum(retention_hours=0, enforce_retention_duration=False,
                                 dry_run=False)  # fmt: skip
    assert _ids(path, seen, since=START + timedelta(minutes=1, seconds=30)) == ["a-2", "a-3"]
