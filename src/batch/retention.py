"""Old model versions go: their version-scoped Redis keys, their index (a shard, or a
server's collection) and their folder (manifest, factors, trending), so storage does not
grow with every batch run.

Kept: the live version, every version newer than it (a candidate that may still be
promoted, or a batch run still writing its files), and the `keep` most recent versions
rollback can return to. A candidate older than the live version was passed over; the
updater would feed it for nothing. With no live version nothing is pruned.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from recsys.index.factory import open_backend
from recsys.model_layout import version_dir
from recsys.settings import Settings
from recsys.user_store import UserStore


@dataclass(frozen=True)
class Pruned:
    version: str
    redis_keys: int
    had_files: bool


def versions_to_prune(settings: Settings, store: UserStore, keep: int) -> list[str]:
    """Every version on disk or in the store's pointers that the rules above do not keep."""
    state = store.pointers()
    live, candidates, history = state.live, state.candidates, state.history
    if live is None:
        return []
    on_disk = (
        {p.name for p in settings.models_dir.iterdir() if p.is_dir()}
        if settings.models_dir.exists()
        else set()
    )
    known = on_disk | candidates | set(history)
    # Version names sort by creation time (vYYYYMMDDTHHMMSSmmm).
    kept = {live} | set(history[:keep]) | {v for v in known if v > live}
    return sorted(known - kept)


def prune(settings: Settings, store: UserStore, keep: int) -> list[Pruned]:
    """Delete what `versions_to_prune` names; return what went."""
    out = []
    index = open_backend(settings)
    for version in versions_to_prune(settings, store, keep):
        # Out of the pointers first (drop_version), so nothing points at a version while
        # its index and files go.
        redis_keys = store.drop_version(version)
        index.drop(version)
        folder = version_dir(settings.models_dir, version)
        had_files = folder.exists()
        shutil.rmtree(folder, ignore_errors=True)
        out.append(Pruned(version, redis_keys, had_files))
    return out
