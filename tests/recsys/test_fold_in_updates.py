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
import scipy.sparse as sp

from batch.pipeline import BatchReport
from batch.update_replay import FoldIn, _History
from recsys import keys
from recsys.apply import EventApplier, Target
from recsys.events import Event
from recsys.fold_in import FoldInModel, Recency, gram
from recsys.ranking.metrics import AlignedFactors
from recsys.settings import Settings
from recsys.vectors import Vector, decode, encode

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _model(client: redis.Redis, version: str) -> FoldInModel:
    raw = client.hgetall(keys.model_meta(version))
    model = FoldInModel.from_meta({k.decode(): v.decode() for k, v in raw.items()})
    assert model is not None, "an implicit-trained version carries its fold-in fields"
    return model


def _expected(
    client: redis.Redis,
    version: str,
    customer: str,
    now: datetime,
    settings: Settings,
    signal: Event | None = None,
    latest: str | None = None,
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
    recency = Recency(settings.fold_in_half_life_events, settings.fold_in_step)
    norm = float(client.hget(keys.model_meta(version), "user_norm_median") or 1.0)
    return _model(client, version).user_vector(
        bought, vectors, now.timestamp(), extra, latest=latest, recency=recency,
        default_norm=norm,
    )  # fmt: skip


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
    # The online form, with a step, so the history's ages and the step are both checked.
    folding = settings.model_copy(
        update={"online_update": "fold_in", "event_weight_view": 0.5, "fold_in_step": 0.2}
    )
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
        expected = _expected(redis_conn, version, customer, at, folding, latest=article)
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
    expected = _expected(redis_conn, version, customer, view.ts, folding, signal=view)
    vector = stored()
    assert vector is not None and expected is not None
    assert vector == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_the_updater_and_the_replay_fold_in_alike_with_recency_and_a_step(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    """Congruence: the vector the updater stores after each purchase is the one the replay
    evaluation (batch.evaluation) computes for the same history, with the same recency
    and step; two train purchases of one day share an age in both."""
    rng = np.random.default_rng(3)
    catalogue = rng.normal(0, 1, (12, 8)).astype(np.float32)
    articles = [f"c{i:02d}" for i in range(len(catalogue))]
    folding = FoldInModel(gram(catalogue), regularization=0.4, alpha=3.0, half_life_days=0.0,
                          regularization_exponent=0.5)  # fmt: skip
    recency = Recency(half_life_events=2.0, step=0.3)
    version, customer = f"fold-congruence-{uuid.uuid4().hex[:8]}", f"fold-{uuid.uuid4().hex[:8]}"
    start, day = int(T0.timestamp()), 86_400
    train = {articles[0]: start - 3 * day, articles[1]: start - day, articles[2]: start - day}
    written = [keys.model_meta(version), keys.history(customer)]
    written += [keys.item_vector(version, a) for a in articles]
    try:
        redis_conn.hset(
            keys.model_meta(version), mapping={**folding.meta(), "user_norm_median": 2.0}
        )
        for article, vector in zip(articles, catalogue, strict=True):
            redis_conn.set(keys.item_vector(version, article), encode(vector))
        redis_conn.zadd(keys.history(customer), train)  # as the batch writes it: days
        live = settings.model_copy(
            update={"online_update": "fold_in", "fold_in_half_life_events": 2.0,
                    "fold_in_step": 0.3}
        )  # fmt: skip
        applier = EventApplier(live, redis_conn)

        # The replay's side: the train items at weight 1 and their days, then each event.
        index = {a: i for i, a in enumerate(articles)}
        cols = [index[a] for a in train]
        shape = (1, len(articles))
        replayed = FoldIn(
            folding.regularization, folding.alpha, folding.item_gram,
            weights=sp.csr_matrix((np.ones(len(cols)), ([0] * len(cols), cols)), shape=shape),
            regularization_exponent=folding.regularization_exponent,
            latest=sp.csr_matrix((np.array(list(train.values()), dtype=np.float64),
                                  ([0] * len(cols), cols)), shape=shape),
            variants=(Recency(), recency),
        )  # fmt: skip
        model = AlignedFactors(users=np.zeros((1, 8), np.float32), items=catalogue,
                               has_user=np.ones(1, bool), has_item=np.ones(len(articles), bool),
                               default_norm=2.0)  # fmt: skip
        history = _History(replayed, 0)
        for n, article in enumerate([articles[5], articles[7], articles[3], articles[9]]):
            at = T0 + timedelta(minutes=n)
            event = Event(event_id=uuid.uuid4().hex, customer_id=customer, article_id=article,
                          ts=at)  # fmt: skip
            assert applier.apply(Target(version, live=False), [event], [n + 1]) == (1, 0)
            history.add(index[article])
            plain, expected = history.vectors(model, replayed)
            stored = decode(redis_conn.get(keys.user_vector(version, customer)))
            assert stored is not None
            assert stored == pytest.approx(expected, rel=1e-4, abs=1e-5)
            assert not np.allclose(stored, plain, atol=1e-3)  # the recency form, not the plain
        written += [keys.user_vector(version, customer), keys.applied_events(version, customer),
                    keys.profile(version, customer), keys.last_event(customer)]  # fmt: skip
    finally:
        redis_conn.delete(*written)
