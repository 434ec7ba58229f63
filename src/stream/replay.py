"""Replay archived purchases onto a model version, so it does not forget what customers
did after its training data was cut. Idempotent: applied events are skipped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from recsys.events import Event
from stream.apply import EventApplier

CHUNK = 2_000


@dataclass(frozen=True)
class ReplayReport:
    events: int
    applied: int
    duplicates: int


def archived_since(events_table: Path, since: datetime) -> pd.DataFrame:
    """Purchases in the archive strictly after `since`, oldest first."""
    try:
        table = DeltaTable(str(events_table))
    except TableNotFoundError:
        return pd.DataFrame()
    frame = table.to_pandas()
    frame = frame[(frame["event_type"] == "purchase") & (frame["ts"] > pd.Timestamp(since))]
    return frame.sort_values(["ts", "kafka_partition", "kafka_offset"], kind="stable")


def replay(
    events_table: Path, since: datetime, version: str, applier: EventApplier
) -> ReplayReport:
    frame = archived_since(events_table, since)
    applied = duplicates = 0
    fields = [name for name in Event.model_fields if name in frame.columns]
    for start in range(0, len(frame), CHUNK):
        rows = frame.iloc[start : start + CHUNK][fields].to_dict("records")
        events = [Event.model_validate({k: v for k, v in r.items() if pd.notna(v)}) for r in rows]
        done, skipped = applier.apply(version, events)
        applied += done
        duplicates += skipped
    return ReplayReport(events=len(frame), applied=applied, duplicates=duplicates)
