"""RECSYS_ONLINE_UPDATE=auto: the batch replays its holdout and keeps the update that
predicts the next purchase best (batch/online_update.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from batch.holdout import HeldOut, HoldoutConfig, Judged
from batch.implicit_trainer import FITTED_ALPHA
from batch.online_update import MIN_EVENTS, choose_online_update
from recsys.online_update import OnlineUpdate
from recsys.ranking.metrics import RankingMetrics
from recsys.settings import Settings
from recsys.trainer import Factors

DAY0 = pd.Timestamp("2026-01-01")


def _switched_tastes(customers: int, seed: int = 0) -> tuple[HeldOut, Judged]:
    """A planted shop: every customer trained on 5 articles of style A, then buys 6 of
    style B one day after another. A static vector keeps ranking A's other articles
    first (it never finds B); an update that follows the purchases does."""
    rng = np.random.default_rng(seed)
    dim, per_style = 8, 30
    style_a, style_b = np.eye(dim)[0], np.eye(dim)[1]
    noise = rng.normal(0, 0.05, (2 * per_style, dim))
    items = np.vstack([np.tile(style_a, (per_style, 1)), np.tile(style_b, (per_style, 1))])
    item_ids = np.array([f"a{i:02d}" for i in range(per_style)]
                        + [f"b{i:02d}" for i in range(per_style)], dtype=object)  # fmt: skip
    ids = np.array([f"c{c:04d}" for c in range(customers)], dtype=object)
    users = np.tile(style_a, (customers, 1)) + rng.normal(0, 0.05, (customers, dim))
    seen, held = [], []
    for customer in ids:
        for n, item in enumerate(rng.choice(per_style, 5, replace=False)):
            seen.append((customer, item_ids[item], 1.0, DAY0 + pd.Timedelta(days=n)))
        for n, item in enumerate(rng.choice(per_style, 6, replace=False)):
            held.append((customer, item_ids[per_style + item], DAY0 + pd.Timedelta(days=10 + n)))
    factors = Factors(
        user_ids=ids,
        item_ids=item_ids,
        user_factors=users.astype(np.float32),
        item_factors=(items + noise).astype(np.float32),
        params={"trainer": "implicit", "regularization": 0.1, "alpha": 10.0, FITTED_ALPHA: 10.0},
        train_seconds=0.0,
    )
    no_metrics = RankingMetrics(
        ndcg=0, map=0, recall=0, coverage=0, users=0, users_without_vector=0
    )
    judged = Judged(
        no_metrics,
        factors,
        pd.DataFrame(seen, columns=["customer_id", "article_id", "weight", "last_purchase"]),
    )
    frame = pd.DataFrame(held, columns=["customer_id", "article_id", "t_dat"])
    # The Spark frames are not read by the choice: the judged customers' rows are above.
    return HeldOut(train=None, judged=None, held_out=frame), judged  # type: ignore[arg-type]


def test_the_update_that_follows_the_purchases_is_chosen_and_recorded() -> None:
    held, judged = _switched_tastes(customers=60)
    settings = Settings(_env_file=None, online_update_customers=50)  # type: ignore[call-arg]
    chosen, record = choose_online_update(held, judged, settings, HoldoutConfig(k=10, seed=1))
    assert chosen is not None and record.chosen == chosen.name
    # A seeded sample of the judged customers, every held-out purchase of theirs replayed.
    assert record.customers == 50 and record.events == 50 * 6
    # Every EMA rate and fold-in form was replayed; the chosen one is the best of them.
    assert {"ema 0.05", "ema 0.3", "ema 0.5", "fold-in", "fold-in h8 step0.2"} <= set(
        record.hit_rates
    )
    assert record.hit_rates[record.chosen] == max(record.hit_rates.values())
    # The static vector never finds style B, nor does the slowest EMA; the chosen update
    # does, after the first purchase of B (which no update can predict: at most 5 in 6).
    assert record.static_hit_rate == 0.0 and record.hit_rates["ema 0.05"] == 0.0
    assert record.hit_rates[record.chosen] > 0.25
    # What the updater reads back from the version's meta is the same update.
    meta = {key: str(value) for key, value in chosen.meta().items()}
    assert OnlineUpdate.from_meta(meta) == chosen


def test_too_few_events_keep_the_settings_update() -> None:
    customers = MIN_EVENTS // 6 - 1  # each holds out 6 purchases
    held, judged = _switched_tastes(customers=customers)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    chosen, record = choose_online_update(held, judged, settings, HoldoutConfig())
    assert chosen is None and record.chosen is None
    assert record.events == customers * 6 < MIN_EVENTS


def test_a_spark_trained_model_is_given_an_ema_rate() -> None:
    held, judged = _switched_tastes(customers=30)
    spark_params = {"trainer": "spark", "rank": 8}
    judged = replace(judged, factors=replace(judged.factors, params=spark_params))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    chosen, record = choose_online_update(held, judged, settings, HoldoutConfig())
    assert chosen is not None and chosen.kind == "ema"
    assert all(name.startswith("ema ") for name in record.hit_rates)
    assert chosen.ema_rate == pytest.approx(float(record.chosen.split()[1]))  # type: ignore[union-attr]
