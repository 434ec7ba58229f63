"""Each version is served with its own online update: under RECSYS_ONLINE_UPDATE=auto
the one the batch chose and left in the version's meta, else the settings' (recsys/apply.py,
recsys/online_update.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
import redis

from recsys import keys
from recsys.apply import EventApplier, Target
from recsys.ema import ema_update
from recsys.events import Event
from recsys.fold_in import FoldInModel, Recency, gram
from recsys.online_update import OnlineUpdate, resolve
from recsys.settings import Settings
from recsys.vectors import Vector, decode, encode

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NORM = 2.0
FOLD_IN = OnlineUpdate("fold_in", recency=Recency(half_life_events=2.0, step=0.3))


@dataclass(frozen=True)
class _Version:
    name: str
    customer: str
    catalogue: dict[str, Vector]
    folding: FoldInModel
    before: Vector


@pytest.fixture
def version(redis_conn: redis.Redis) -> Iterator[_Version]:
    """A version of 6 articles, one customer with a vector and two purchases."""
    rng = np.random.default_rng(5)
    catalogue = {f"o{i}": rng.normal(0, 1, 8).astype(np.float32) for i in range(6)}
    folding = FoldInModel(gram(np.stack(list(catalogue.values()))), 0.4, 3.0, 0.0)
    made = _Version(f"online-{uuid.uuid4().hex[:8]}", f"online-{uuid.uuid4().hex[:8]}",
                    catalogue, folding, rng.normal(0, 1, 8).astype(np.float32))  # fmt: skip
    redis_conn.hset(keys.model_meta(made.name),
                    mapping={**folding.meta(), "user_norm_median": NORM})  # fmt: skip
    for article, vector in catalogue.items():
        redis_conn.set(keys.item_vector(made.name, article), encode(vector))
    redis_conn.set(keys.user_vector(made.name, made.customer), encode(made.before))
    day = 86_400
    redis_conn.zadd(keys.history(made.customer),
                    {"o0": T0.timestamp() - 2 * day, "o1": T0.timestamp() - day})  # fmt: skip
    yield made
    found = list(redis_conn.scan_iter(match=f"*{made.name}*"))
    redis_conn.delete(*found, keys.history(made.customer), keys.last_event(made.customer))


def _bought(redis_conn: redis.Redis, settings: Settings, version: _Version) -> Vector:
    """The customer buys o4 through the applier; their stored vector after it."""
    event = Event(event_id=uuid.uuid4().hex, customer_id=version.customer, article_id="o4",
                  ts=T0)  # fmt: skip
    assert EventApplier(settings, redis_conn).apply(Target(version.name, True), [event], [1])
    stored = decode(redis_conn.get(keys.user_vector(version.name, version.customer)))
    assert stored is not None
    return stored


def _ema(version: _Version, rate: float) -> Vector:
    return ema_update(version.before, version.catalogue["o4"], rate, NORM)


def _folded(version: _Version, recency: Recency) -> Vector:
    day = 86_400
    bought = {"o0": T0.timestamp() - 2 * day, "o1": T0.timestamp() - day, "o4": T0.timestamp()}
    vector = version.folding.user_vector(
        bought, version.catalogue, T0.timestamp(), latest="o4", recency=recency, default_norm=NORM
    )
    assert vector is not None
    return vector


@pytest.mark.parametrize(
    ("setting", "chosen", "expected"),
    [
        ("auto", OnlineUpdate("ema", 0.5), "ema 0.5"),
        ("auto", FOLD_IN, "fold-in h2 step0.3"),
        ("auto", None, "ema 0.3"),  # the batch chose none: the settings' EMA
        ("ema", FOLD_IN, "ema 0.3"),  # a named update is the settings' own
    ],
)
def test_the_version_is_updated_as_chosen(
    settings: Settings,
    redis_conn: redis.Redis,
    version: _Version,
    setting: str,
    chosen: OnlineUpdate | None,
    expected: str,
) -> None:
    if chosen is not None:
        redis_conn.hset(keys.model_meta(version.name), mapping=chosen.meta())
    own = settings.model_copy(update={"online_update": setting, "ema_rate": 0.3})
    stored = _bought(redis_conn, own, version)
    if expected.startswith("ema"):
        want = _ema(version, float(expected.split()[1]))
    else:
        want = _folded(version, FOLD_IN.recency)
    assert stored == pytest.approx(want, rel=1e-4, abs=1e-5)
    # The other candidates would have stored something else: the check can fail.
    for other in ("ema 0.5", "ema 0.3", "fold-in h2 step0.3"):
        if other != expected:
            vector = _ema(version, 0.5 if other == "ema 0.5" else 0.3)
            if other.startswith("fold-in"):
                vector = _folded(version, FOLD_IN.recency)
            assert not np.allclose(stored, vector, atol=1e-3)


def test_fold_in_chosen_for_a_version_that_cannot_fold_in_falls_back_to_the_ema() -> None:
    settings = Settings(_env_file=None, ema_rate=0.2)  # type: ignore[call-arg]
    meta = {key: str(value) for key, value in FOLD_IN.meta().items()}
    assert resolve(settings, meta, can_fold_in=True) == FOLD_IN
    assert resolve(settings, meta, can_fold_in=False) == OnlineUpdate("ema", 0.2)
    assert resolve(settings, {}, can_fold_in=True) == OnlineUpdate("ema", 0.2)
    named = settings.model_copy(update={"online_update": "fold_in"})
    assert resolve(named, {}, can_fold_in=True).kind == "fold_in"
