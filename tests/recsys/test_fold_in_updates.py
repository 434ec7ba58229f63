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
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, transactions: pd.DataFrame
) -> None:
    folding = settings.model_copy(update={"online_update": "fold_in", "event_weight_view": 0.5})
    applier, live = EventApplier(folding, redis_conn), Target(trained.version, live=True)
    articles = [str(a) for a in transactions["article_id"].drop_duplicates().head(3)]
    version = trained.version
    # A customer of this test's own, so the suite's shared customers keep their counts.
    customer = f"fold-{uuid.uuid4().hex[:8]}"

    def stored() -> Vector | None:
        return decode(redis_conn.get(keys.user_vector(version, customer)))

    # The first purchase: the fold-in of that one item; the second: of both, a day later.
    for day, article in enumerate(articles[:2]):
        at = T0 + timedelta(days=day)
        bought = Event(event_id=uuid.uuid4().hex, customer_id=customer, article_id=article, ts=at)
        assert applier.apply(live, [bought], [day + 1]) == (1, 0)
        expected = _expected(redis_conn, version, customer, at)
        vector = stored()
        assert vector is not None and expected is not None
        assert vector == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert redis_conn.zcard(keys.history(customer)) == 2

    # A view moves it by the history plus the viewed item at the view's weight; the
    # history stays purchases only.
    view = Event(
        event_id=uuid.uuid4().hex,
        event_type="view",
        customer_id=customer,
        article_id=articles[2],
        ts=T0 + timedelta(days=2),
    )
    assert applier.apply(live, [view], [3]) == (1, 0)
    assert redis_conn.zcard(keys.history(customer)) == 2
    expected = _expected(redis_conn, version, customer, view.ts, signal=view)
    vector = stored()
    assert vector is not None and expected is not None
    assert vector == pytest.approx(expected, rel=1e-4, abs=1e-5)
