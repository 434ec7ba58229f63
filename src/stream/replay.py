"""Replay archived purchases onto a model version, so it does not forget what customers
did after its training data was cut. Idempotent: applied events are skipped.

What the version has not seen is exactly what the events table gained after the Delta
version its batch read; where that version is gone (vacuumed) or unknown, events after
the training cutoff stand in for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from recsys.erasure import drop_erased
from recsys.events import EVENT_TYPES, Event
from stream.apply import EventApplier

CHUNK = 2_000


@dataclass(frozen=True)
class ReplayReport:
    events: int
    applied: int
    duplicates: int


def unseen_purchases(
    events_table: Path,
    seen_table_version: int | None,
    since: datetime,
    erased: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Archived purchases a model trained on `seen_table_version` never saw, oldest first,
    less those of erased customers from before their erasure (recsys.erasure)."""
    try:
        frame = DeltaTable(str(events_table)).to_pandas()
    except TableNotFoundError:
        return pd.DataFrame()
    # Every type the updater applies, weaker signals too (by their weight): a version
    # trained before them must not miss them either.
    frame = frame[frame["event_type"].isin(EVENT_TYPES)]
    seen = _event_ids_at(events_table, seen_table_version)
    if seen is not None:
        frame = frame[~frame["event_id"].isin(seen)]
    else:
        frame = frame[frame["ts"] > pd.Timestamp(since)]
    if erased is not None:
        frame = drop_erased(frame, erased, "ts")
    return frame.sort_values(["ts", "kafka_partition", "kafka_offset"], kind="stable")


def _event_ids_at(events_table: Path, table_version: int | None) -> pd.Series | None:
    """Event ids in the table at that version; empty for -1 (no table yet); None when
    unknown, so the caller falls back to the cutoff."""
    if table_version is None:
        return None
    if table_version < 0:
        return pd.Series([], dtype=object)
    try:
        old = DeltaTable(str(events_table), version=table_version)
    except Exception:  # vacuumed, or never existed: fall back to the cutoff
        return None
    ids: pd.Series = old.to_pandas(columns=["event_id"])["event_id"]
    return ids


def replay(
    events_table: Path,
    version: str,
    applier: EventApplier,
    *,
    seen_table_version: int | None,
    since: datetime,
    erased: pd.DataFrame | None = None,
) -> ReplayReport:
    frame = unseen_purchases(events_table, seen_table_version, since, erased)
    applied = duplicates = 0
    fields = [name for name in Event.model_fields if name in frame.columns]
    for start in range(0, len(frame), CHUNK):
        rows = frame.iloc[start : start + CHUNK][fields].to_dict("records")
        events = [Event.model_validate({k: v for k, v in r.items() if pd.notna(v)}) for r in rows]
        done, skipped = applier.apply(version, events)
        applied += done
        duplicates += skipped
    return ReplayReport(events=len(frame), applied=applied, duplicates=duplicates)
