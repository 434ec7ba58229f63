"""Old versions are pruned from Redis and disk; live, newer and rollback ones stay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from batch.retention import prune, versions_to_prune
from recsys import keys
from recsys.model_layout import version_dir
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from support import isolated

VERSIONS = [f"v20260101T0000{i:02d}000" for i in range(7)]


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, redis.Redis]]:
    with isolated(settings, tmp_path / "data", db=6) as pair:
        yield pair


def _make_version(settings: Settings, client: redis.Redis, version: str) -> None:
    folder = version_dir(settings.models_dir, version)
    (folder / "shard").mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    pipe = client.pipeline()
    for i in range(30):
        pipe.set(keys.user_vector(version, f"c{i}"), b"x")
        pipe.set(keys.item_vector(version, f"a{i}"), b"x")
    pipe.hset(keys.model_meta(version), "dim", 8)
    pipe.execute()


def test_prune_keeps_live_newer_and_rollback_versions(own: tuple[Settings, redis.Redis]) -> None:
    settings, client = own
    for version in VERSIONS:
        _make_version(settings, client, version)
    v0, v1, v2, v3, v4, v5, v6 = VERSIONS
    # v4 is live; v3, v1, v0 were live before it (newest first); v2 a passed-over
    # candidate; v5 a newer candidate; v6 a run still writing (on disk, not registered).
    client.set(keys.LIVE_VERSION, v4)
    client.rpush(keys.VERSION_HISTORY, v3, v1, v0)
    client.sadd(keys.CANDIDATE_VERSIONS, v2, v5)
    client.set(keys.history("c1"), b"not version-scoped")

    assert versions_to_prune(settings, RedisUserStore(client), keep=1) == [v0, v1, v2]
    pruned = prune(settings, RedisUserStore(client), keep=1)
    assert [p.version for p in pruned] == [v0, v1, v2]
    assert all(p.redis_keys == 61 and p.had_files for p in pruned)
    for version in (v0, v1, v2):
        assert not version_dir(settings.models_dir, version).exists()
        assert not list(client.scan_iter(match=f"rs:v:{version}:*"))
    for version in (v3, v4, v5, v6):
        assert version_dir(settings.models_dir, version).exists()
        assert client.exists(keys.model_meta(version))
    assert [h.decode() for h in client.lrange(keys.VERSION_HISTORY, 0, -1)] == [v3]
    assert {c.decode() for c in client.smembers(keys.CANDIDATE_VERSIONS)} == {v5}
    assert client.exists(keys.history("c1"))
    assert prune(settings, RedisUserStore(client), keep=1) == []  # nothing more to do


def test_nothing_is_pruned_without_a_live_version(own: tuple[Settings, redis.Redis]) -> None:
    settings, client = own
    for version in VERSIONS[:3]:
        _make_version(settings, client, version)
    assert prune(settings, RedisUserStore(client), keep=0) == []
