"""`recsys bench soak`, short: the simulator against its own embedded stack while Valkey,
the broker (frozen, then restarted), the updater and the archiver go down in turn. The
books must balance: every acknowledged event once in the Delta table and applied once,
no 5xx but the broker outage's 503s, which the simulator sends again."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import simulator.soak as soak
from recsys.settings import Settings
from simulator.chaos import ACTIONS
from simulator.poison import KINDS
from support import engine_pids

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_a_short_soak_loses_and_duplicates_nothing(
    base_settings: Settings, tmp_path: Path, spark: SparkSession
) -> None:
    before = engine_pids()
    options = soak.SoakOptions(duration_s=50, rate_per_s=10, outage_s=3, customers=1_500,
                               articles=400, transactions=15_000, poison_share=0.1)  # fmt: skip
    result = soak.run(base_settings, tmp_path, options, spark)
    books = result.books
    assert result.passed, result.to_dict()
    assert [e.action for e in result.chaos] == list(ACTIONS)
    assert result.chaos[-1].note == "drained"  # so the broker was restarted
    assert books.purchases_acknowledged > 200
    assert books.in_table >= books.acknowledged
    assert books.never_delivered == 0
    assert books.customers_checked > 50
    assert result.unexpected_5xx == 0 and result.events_given_up == 0
    assert {m.name for m in result.memory} >= {"api", "updater", "archiver", "valkey", "broker"}
    assert all(m.end_mib > 0 for m in result.memory)
    # A bad message a second straight onto the topic, every kind: none stopped a worker,
    # none was applied or archived, each one delivered was dead-lettered (but any the
    # embedded broker's restart lost with its memory).
    poison = result.poison
    assert poison.total > 30 and len(poison.sent) == len(KINDS)
    assert (poison.archived, poison.applied, poison.workers_down) == (0, 0, [])
    assert poison.dead_lettered >= poison.delivered - poison.not_dead_lettered > 20
    assert engine_pids() - before == set()
