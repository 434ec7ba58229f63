"""RECSYS_ONLINE_UPDATE=fold_in: the updater recomputes the vector by fold-in from the
purchase history, with the Gram matrix and the trainer's parameters the batch left in
the version's meta (recsys/apply.py, recsys/fold_in.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import redis

from batch.pipeline import BatchReport
from recsys import keys
from recsys.apply import EventApplier, Target
from recsys.events import Event
from recsys.fold_in import FoldInModel
from recsys.settings import Settings
from recsys.vectors import Vector, decode

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _model(client: redis.Redis, version: str) -> FoldInModel:
    raw = client.hgetall(keys.model_meta(version))
    model = FoldInModel.from_meta({k.decode(): v.decode() for k, v in raw.items()})
    assert model is not None, "an implicit-trained version carries its fold-in fields"
    return model


def _expected(
    client: redis.Redis, version: str, customer: str, now: datetime, signal: Event | None = None
) -> Vector | None:
    bought = {
        a.decode(): float(ts)
        for a, ts in client.zrange(keys.history(customer), 0, -1, withscores=True)
    }
    wanted = [*bought, *([signal.article_id] if signal else [])]
    vectors = {
        a: v for a in wanted if (v := decode(client.get(keys.item_vector(version, a)))) is not None
    }
    extra = (vectors[signal.article_id], 0.5) if signal is not None else None
    return _model(client, version).user_vector(bought, vectors, now.timestamp(), extra)


def test_the_batch_leaves_what_fold_in_needs_in_the_versions_meta(
    redis_conn: redis.Redis, trained: BatchReport
) -> None:
    model = _model(redis_conn, trained.version)
    dim = int(redis_conn.hget(keys.model_meta(trained.version), "dim") or 0)
    assert model.item_gram.shape == (dim, dim)
    assert np.allclose(model.item_gram, model.item_gram.T)
    assert model.regularization > 0 and model.alpha > 0


def test_purchases_and_views_fold_in_from_the_history(
    settings: Settings,
    redis_conn: redis.Redis,
    trained: BatchReport,
    transactions: pd.DataFrame,
    known_customer: str,
) -> None:
    folding = settings.model_copy(update={"online_update": "fold_in", "event_weight_view": 0.5})
    applier, live = EventApplier(folding, redis_conn), Target(trained.version, live=True)
    articles = [str(a) for a in transactions["article_id"].drop_duplicates().head(3)]
    version = trained.version

    # A known customer buys: the vector is the fold-in of the history, the new item in it.
    bought = Event(
        event_id=uuid.uuid4().hex, customer_id=known_customer, article_id=articles[0], ts=T0
    )
    assert applier.apply(live, [bought], [1]) == (1, 0)
    stored = decode(redis_conn.get(keys.user_vector(version, known_customer)))
    expected = _expected(redis_conn, version, known_customer, T0)
    assert stored is not None and expected is not None
    assert stored == pytest.approx(expected, rel=1e-4, abs=1e-5)

    # A view moves it by the history plus the viewed item at the view's weight; the
    # history stays purchases only.
    view = Event(
        event_id=uuid.uuid4().hex,
        event_type="view",
        customer_id=known_customer,
        article_id=articles[1],
        ts=T0 + timedelta(minutes=1),
    )
    history_before = redis_conn.zcard(keys.history(known_customer))
    assert applier.apply(live, [view], [2]) == (1, 0)
    assert redis_conn.zcard(keys.history(known_customer)) == history_before
    stored = decode(redis_conn.get(keys.user_vector(version, known_customer)))
    expected = _expected(redis_conn, version, known_customer, view.ts, signal=view)
    assert stored is not None and expected is not None
    assert stored == pytest.approx(expected, rel=1e-4, abs=1e-5)

    # A new customer's first purchase: the fold-in of that one item.
    newcomer = f"fold-{uuid.uuid4().hex[:8]}"
    first = Event(event_id=uuid.uuid4().hex, customer_id=newcomer, article_id=articles[2], ts=T0)
    assert applier.apply(live, [first], [3]) == (1, 0)
    stored = decode(redis_conn.get(keys.user_vector(version, newcomer)))
    expected = _expected(redis_conn, version, newcomer, T0)
    assert stored is not None and expected is not None
    assert stored == pytest.approx(expected, rel=1e-4, abs=1e-5)
