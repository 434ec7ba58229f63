"""Model versions: candidates, promotion with replay, rollback, and the list of them.

A new version is a candidate first (the updater applies live events to it too); promoting
replays the archived events since its training cutoff, then moves the live pointer, so a
new model never forgets what customers did after its data was cut. Old versions stay for
rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from recsys.audit import LOCAL, audited
from recsys.erasure import erased_before
from recsys.index.factory import open_backend
from recsys.model_store import Manifest, read_manifest
from recsys.replay import ReplayReport, replay
from recsys.settings import Settings
from recsys.user_store import UserStore

# The manifest's data_version key for the events table version the batch trained on.
EVENTS_TABLE_KEY = "bronze.events"


class VersionError(ValueError):
    """A version that does not exist, or a rollback with nothing to roll back to."""


@dataclass(frozen=True)
class VersionInfo:
    manifest: Manifest
    status: str  # live, candidate, previous or kept


def _manifest(settings: Settings, version: str) -> Manifest:
    try:
        return read_manifest(settings.models_dir, version)
    except FileNotFoundError as exc:
        raise VersionError(f"no model version {version} in {settings.models_dir}") from exc


def promote(
    settings: Settings, store: UserStore, version: str, *, actor: str = LOCAL
) -> ReplayReport:
    """Replay what happened since the version's cutoff onto it, then make it live. The
    audit line names the actor (an API key's name, or `local`)."""
    with audited("promote", actor, version=version) as entry:
        entry.add(previous=store.live_version())
        report = _promote(settings, store, version)
        entry.add(**_replayed(report))
    return report


def _promote(settings: Settings, store: UserStore, version: str) -> ReplayReport:
    manifest = _manifest(settings, version)
    # While it replays, live events reach it through the updater too: as a candidate it
    # remembers every event applied to it, so neither applies one the other did.
    store.add_candidate(version)
    applier = store.applier(settings)
    report = replay(
        settings.events_table,
        version,
        applier,
        seen_table_version=manifest.data_version.get(EVENTS_TABLE_KEY),
        since=manifest.cutoff,
        erased=erased_before(settings.lake_dir),
    )
    store.make_live(version)
    # Live now: each customer's applied events are bounded again.
    applier.trim_applied(version)
    # The pointer is the truth the API follows; a server's alias follows it.
    open_backend(settings).publish(version)
    return report


def rollback(
    settings: Settings, store: UserStore, *, actor: str = LOCAL
) -> tuple[str, ReplayReport]:
    """Make the previous live version live again, brought up to date by replay."""
    with audited("rollback", actor) as entry:
        current = store.live_version()
        entry.add(previous=current)
        previous = store.pop_previous()
        if previous is None:
            raise VersionError("no previous version to roll back to")
        entry.add(version=previous)
        report = _promote(settings, store, previous)
        # Rolling back is not a promotion: the version rolled away from is not "previous".
        if current is not None:
            store.forget_previous(current)
        entry.add(**_replayed(report))
    return previous, report


def _replayed(report: ReplayReport) -> dict[str, int]:
    return {
        "replayed_events": report.events,
        "applied": report.applied,
        "duplicates": report.duplicates,
    }


def list_versions(settings: Settings, store: UserStore) -> list[VersionInfo]:
    state = store.pointers()
    live, candidates, history = state.live, state.candidates, state.history
    found: list[VersionInfo] = []
    if not settings.models_dir.exists():
        return found
    for path in sorted(settings.models_dir.iterdir(), reverse=True):
        if not (path / "manifest.json").exists():
            continue
        version = path.name
        if version == live:
            status = "live"
        elif version in candidates:
            status = "candidate"
        elif history and version == history[0]:
            status = "previous"
        else:
            status = "kept"
        found.append(VersionInfo(read_manifest(settings.models_dir, version), status))
    return found


def cutoff_of(csv_last_day: datetime, archived_last_ts: datetime | None) -> datetime:
    """The instant the training data ends: the end of the CSVs' last day, or the last
    archived event if later."""
    end_of_csv = csv_last_day + timedelta(days=1)
    return max(end_of_csv, archived_last_ts) if archived_last_ts else end_of_csv
