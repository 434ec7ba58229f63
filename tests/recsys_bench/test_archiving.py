"""`recsys bench archive`, tiny: both layouts filled with the same events, each flush
inserts exactly the new ones, and the figures are there."""

from __future__ import annotations

from pathlib import Path

from recsys_bench import archiving as bench


def test_both_layouts_are_measured_on_the_same_events(tmp_path: Path) -> None:
    rows = bench.run(tmp_path, [30_000], per_day=10_000, flushes=2)
    (row,) = rows
    assert row.events == 30_000 and row.days == 3
    assert row.flush_partitioned_s > 0 and row.flush_unpartitioned_s > 0
    # Three days, the two closed ones compacted to a file each; two flushes on the last.
    assert row.files_partitioned <= 2 + 1 + 2
    assert row.to_dict()["unpartitioned_over_partitioned"] > 0
    assert bench.table(rows, 10_000).row_count == 1
    assert not any(tmp_path.iterdir())  # the filled tables are removed
