"""The tables role's contract: what every implementation of `recsys.tables.Tables` must do
for the archiver, erasure and replay (create once, versions, merges that insert only
what is new or newer, deletes, the files of a version, compaction, vacuum, and commits
that survive a race with another writer).

It runs against `DeltaTables` on a temporary folder; another implementation joins the
`IMPLEMENTATIONS` list.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from recsys.tables import DeltaTables, Tables

IMPLEMENTATIONS = [DeltaTables]
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("n", pa.int64()),
        ("day", pa.date32()),
    ]
)
DAY_1, DAY_2 = date(2026, 11, 1), date(2026, 11, 2)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda kind: kind.__name__)
def tables(request: pytest.FixtureRequest) -> Tables:
    made: Tables = request.param()
    return made


def _rows(*rows: tuple[str, int, int, date]) -> pa.Table:
    return pa.table(
        {
            "id": [r[0] for r in rows],
            "ts": [datetime.fromtimestamp(r[1], tz=UTC) for r in rows],
            "n": [r[2] for r in rows],
            "day": [r[3] for r in rows],
        },
        schema=SCHEMA,
    )


def _ids(tables: Tables, path: Path) -> list[str]:
    return sorted(tables.read(path, ["id"]).column("id").to_pylist())


def test_a_table_is_made_once_and_versions_count_its_commits(
    tables: Tables, tmp_path: Path
) -> None:
    path = tmp_path / "t"
    assert not tables.exists(path) and tables.version(path) is None
    tables.ensure(path, SCHEMA, ["day"])
    tables.ensure(path, SCHEMA, ["day"])  # a second call leaves it as it is
    assert tables.exists(path) and tables.version(path) == 0
    assert tables.partition_columns(path) == ["day"]
    assert tables.schema(path).names == SCHEMA.names
    assert tables.read(path).num_rows == 0
    tables.append(path, _rows(("a", 1, 1, DAY_1)))
    assert tables.version(path) == 1
    tables.add_timestamp_column(path, "received_at")
    assert "received_at" in tables.schema(path).names
    assert tables.read(path, ["received_at"]).column(0).to_pylist() == [None]


def test_insert_new_and_upsert_write_only_what_is_new_or_newer(
    tables: Tables, tmp_path: Path
) -> None:
    path = tmp_path / "t"
    tables.ensure(path, SCHEMA)
    assert tables.insert_new(path, _rows(("a", 1, 1, DAY_1), ("b", 1, 1, DAY_1)), "t.id = s.id")
    again = _rows(("a", 5, 9, DAY_1), ("c", 1, 1, DAY_1))
    assert tables.insert_new(path, again, "t.id = s.id") == 1, "only c is new"
    assert tables.insert_new(path, _rows(), "t.id = s.id") == 0
    assert _ids(tables, path) == ["a", "b", "c"]

    newer = "s.ts > t.ts"
    written = tables.upsert(path, _rows(("a", 5, 9, DAY_1), ("b", 0, 7, DAY_1),
                                        ("d", 1, 1, DAY_1)), "t.id = s.id", newer)  # fmt: skip
    assert written == 2, "a replaced (newer), b kept (older), d inserted"
    by_id = dict(zip(*tables.read(path, ["id", "n"]).to_pydict().values(), strict=True))
    assert by_id == {"a": 9, "b": 1, "c": 1, "d": 1}


def test_delete_removes_what_the_predicate_names(tables: Tables, tmp_path: Path) -> None:
    path = tmp_path / "t"
    tables.ensure(path, SCHEMA, ["day"])
    tables.append(path, _rows(("a", 1, 1, DAY_1), ("a", 9, 1, DAY_2), ("b", 1, 1, DAY_1)))
    cutoff = datetime.fromtimestamp(5, tz=UTC).isoformat()
    assert tables.delete(path, f"id = 'a' AND ts <= '{cutoff}'") == 1
    assert tables.delete(path, "id = 'nobody'") == 0
    assert tables.read(path, ["id", "n"]).num_rows == 2


def test_files_of_a_version_and_their_partitions(tables: Tables, tmp_path: Path) -> None:
    path = tmp_path / "t"
    tables.ensure(path, SCHEMA, ["day"])
    tables.append(path, _rows(("a", 1, 1, DAY_1)))
    tables.append(path, _rows(("b", 1, 1, DAY_2)))
    first = tables.files(path, version=1)
    assert [f.partition for f in first] == [{"day": "2026-11-01"}]
    now = tables.files(path)
    assert [f.partition["day"] for f in now] == ["2026-11-01", "2026-11-02"], "commit order"
    assert now[0].committed_ms <= now[1].committed_ms
    rows = tables.read_file(path, now[1].path, ["id"])
    assert rows.column("id").to_pylist() == ["b"]
    with pytest.raises(LookupError):
        tables.files(path, version=99)


def test_compaction_and_vacuum(tables: Tables, tmp_path: Path) -> None:
    path = tmp_path / "t"
    tables.ensure(path, SCHEMA, ["day"])
    for i, who in enumerate(["c", "a", "b"]):
        tables.append(path, _rows((who, i, i, DAY_1)))
    tables.append(path, _rows(("z", 1, 1, DAY_2)))
    assert tables.compact(path, ["id"], ("day", "2026-11-01")) == 3
    day_1 = [f for f in tables.files(path) if f.partition["day"] == "2026-11-01"]
    assert len(day_1) == 1
    assert tables.read_file(path, day_1[0].path, ["id"]).column("id").to_pylist() == [
        "a", "b", "c",
    ]  # fmt: skip
    assert _ids(tables, path) == ["a", "b", "c", "z"]
    assert tables.vacuum(path, retention_hours=0) == 3, "the files the compaction replaced"
    assert tables.vacuum(path, retention_hours=0) == 0
    assert _ids(tables, path) == ["a", "b", "c", "z"]


def test_writers_racing_on_one_table_all_commit(tables: Tables, tmp_path: Path) -> None:
    path = tmp_path / "t"
    tables.ensure(path, SCHEMA)
    errors: list[BaseException] = []

    def write(who: str) -> None:
        try:
            for i in range(5):
                tables.insert_new(path, _rows((f"{who}{i}", i, i, DAY_1)), "t.id = s.id")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(_ids(tables, path)) == 15
