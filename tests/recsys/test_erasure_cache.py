"""The archiver's view of the erasures: current at every flush, read again only when the
table moved."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from recsys.erasure import ERASURES_SCHEMA, ErasureCache, customer_hash, erasures_table


def _erase(lake_dir: Path, customer: str, at: datetime) -> None:
    path = erasures_table(lake_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = pa.table({"customer_hash": [customer_hash(customer)], "erased_at": [at]},
                   schema=ERASURES_SCHEMA)  # fmt: skip
    write_deltalake(str(path), row, mode="append")


def test_the_cache_follows_the_table_and_reads_it_only_when_it_moved(tmp_path: Path) -> None:
    cache = ErasureCache(tmp_path)
    assert cache.current().empty  # no table yet
    first = datetime(2026, 1, 1, tzinfo=UTC)
    _erase(tmp_path, "alice", first)
    seen = cache.current()
    assert list(seen["customer_hash"]) == [customer_hash("alice")]
    assert cache.current() is seen  # unchanged table: the same frame, no read
    later = datetime(2026, 2, 1, tzinfo=UTC)
    _erase(tmp_path, "bob", later)
    _erase(tmp_path, "alice", later)
    now = cache.current().set_index("customer_hash")["erased_at"]
    assert now[customer_hash("alice")] == later and now[customer_hash("bob")] == later
