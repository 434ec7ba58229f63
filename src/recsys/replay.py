"""Replay archived purchases onto a model version, so it does not forget what customers
did after its training data was cut. Idempotent: applied events are skipped, by the
broker time the archive kept (`received_at`) and the event id (recsys/apply.py).

What the version has not seen is exactly what the events table gained after the Delta
version its batch read: the archiver's insert-only merges add files and never rewrite
one, so those rows are in the files added since that version, less any row a rewrite
(an erasure's delete) copied from a file that version held. Where that version is gone
(vacuumed) or unknown, events after the training cutoff stand in for it.

The events are read one added file at a time, in the order they were committed, so a
replay's memory is one archiver flush, not the archive (docs/scale.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from recsys.apply import EventApplier, Target
from recsys.erasure import drop_erased
from recsys.events import EVENT_TYPES, RECEIVED_AT, RECEIVED_DATE, Event
from recsys.tables import DELTA_TABLES, TableFile, Tables

CHUNK = 2_000
ORDER = [RECEIVED_AT, "kafka_partition", "kafka_offset"]


@dataclass(frozen=True)
class ReplayReport:
    events: int
    applied: int
    duplicates: int
    invalid: int = 0  # archived rows that are not events by today's rule (skipped)


@dataclass(frozen=True)
class _Unseen:
    files: list[TableFile]  # in commit order
    # (customer_id, event_id) of the rows a rewrite copied from a file the version held
    seen_ids: frozenset[tuple[str, str]]
    since: datetime | None  # set when the version is unknown: only events after it


def _plan(tables: Tables, root: Path, seen_version: int | None, since: datetime) -> _Unseen:
    current = tables.files(root)
    if seen_version is None:
        return _Unseen(current, frozenset(), since)
    if seen_version < 0:  # there was no table when the version was trained
        return _Unseen(current, frozenset(), None)
    try:
        held = {f.path for f in tables.files(root, seen_version)}
    except LookupError:  # that version's log is gone: fall back to the cutoff
        return _Unseen(current, frozenset(), since)
    rewritten = sorted(held.difference(f.path for f in current))
    ids: set[tuple[str, str]] = set()
    try:
        for file in rewritten:
            held_rows = tables.read_file(root, file, ["customer_id", "event_id"]).to_pydict()
            ids.update(zip(held_rows["customer_id"], held_rows["event_id"], strict=True))
    except OSError:  # vacuumed: ids unknown
        return _Unseen(current, frozenset(), since)
    return _Unseen([f for f in current if f.path not in held], frozenset(ids), None)


def unseen_chunks(
    events_table: Path,
    seen_table_version: int | None,
    since: datetime,
    erased: pd.DataFrame | None = None,
    tables: Tables = DELTA_TABLES,
) -> Iterator[pd.DataFrame]:
    """Archived events a model trained on `seen_table_version` never saw, one committed
    file at a time (oldest first, each in time order), less those of erased customers
    received before their erasure (recsys.erasure)."""
    if not tables.exists(events_table):
        return
    plan = _plan(tables, events_table, seen_table_version, since)
    for file in plan.files:
        frame = tables.read_file(events_table, file.path).to_pandas()
        day = file.partition.get(RECEIVED_DATE)  # not in the file: the table's partition
        if day is not None and RECEIVED_DATE not in frame.columns:
            frame[RECEIVED_DATE] = pd.Timestamp(day, tz="UTC")
        # Every type the updater applies, weaker signals too (by their weight): a version
        # trained before them must not miss them either.
        keep = frame["event_type"].isin(EVENT_TYPES)
        if plan.seen_ids:
            pairs = pd.Series(list(zip(frame["customer_id"], frame["event_id"], strict=True)))
            keep &= ~pairs.isin(plan.seen_ids).to_numpy()
        if plan.since is not None:
            keep &= frame["ts"] > pd.Timestamp(plan.since)
        frame = _with_received_at(frame[keep.to_numpy()])
        if erased is not None:  # by when the stack received them, not the client's ts
            frame = drop_erased(frame, erased, RECEIVED_AT)
        if len(frame):
            yield frame.sort_values(ORDER, kind="stable")


def _with_received_at(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows an archiver wrote before `received_at` existed count as received at the end
    of their received day (or at their event time, without one): never before an event
    the updater applied after them, so a replay does not skip them for its floor."""
    at = frame[RECEIVED_AT] if RECEIVED_AT in frame.columns else None
    if at is not None and not at.isna().any():
        return frame
    fallback = pd.to_datetime(frame["ts"], utc=True)
    if RECEIVED_DATE in frame.columns:
        day_end = pd.to_datetime(frame[RECEIVED_DATE], utc=True) + pd.Timedelta(
            days=1, milliseconds=-1
        )
        fallback = day_end.where(day_end.notna(), fallback)
    frame = frame.copy()
    frame[RECEIVED_AT] = fallback if at is None else at.where(at.notna(), fallback)
    return frame


def _received_ms(column: pd.Series) -> list[int]:
    return (pd.to_datetime(column, utc=True).astype("int64") // 1_000_000).tolist()


def unseen_purchases(
    events_table: Path,
    seen_table_version: int | None,
    since: datetime,
    erased: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`unseen_chunks` in one frame (for inspection and tests; a replay streams them)."""
    chunks = list(unseen_chunks(events_table, seen_table_version, since, erased))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


def replay(
    events_table: Path,
    version: str,
    applier: EventApplier,
    *,
    seen_table_version: int | None,
    since: datetime,
    erased: pd.DataFrame | None = None,
) -> ReplayReport:
    events_seen = applied = duplicates = invalid = 0
    # A version being replayed is a candidate: it remembers every event it applies until
    # its promotion trims them (recsys.apply).
    target = Target(version, live=False)
    for frame in unseen_chunks(events_table, seen_table_version, since, erased):
        fields = [name for name in Event.model_fields if name in frame.columns]
        for start in range(0, len(frame), CHUNK):
            part = frame.iloc[start : start + CHUNK]
            events: list[Event] = []
            stamps: list[int] = []
            for row, stamp in zip(
                part[fields].to_dict("records"), _received_ms(part[RECEIVED_AT]), strict=True
            ):
                try:
                    events.append(
                        Event.model_validate({k: v for k, v in row.items() if pd.notna(v)})
                    )
                except ValidationError:
                    invalid += 1  # archived before the rule (recsys.events): not an event
                    continue
                stamps.append(stamp)
            done, skipped = applier.apply(target, events, stamps)
            applied += done
            duplicates += skipped
        events_seen += len(frame)
    return ReplayReport(events_seen, applied, duplicates, invalid)
