"""What every evaluation stands on (recsys.ranking): the metrics on hand-computed cases,
the per-user temporal split and the validation split carved from train only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ranking_cases import events_frame, random_events
from recsys.ranking.metrics import (
    average_precision_at_k,
    catalog_coverage,
    ndcg_at_k,
    recall_at_k,
    top_k,
)
from recsys.ranking.split import SplitConfig, prepare_split, temporal_split

# ---------------------------------------------------------------- metrics


def test_metrics_of_a_known_ranking() -> None:
    hits = np.zeros((1, 10), dtype=bool)
    hits[0, [0, 2]] = True  # relevant items at ranks 1 and 3
    two, four = np.array([2]), np.array([4])
    discounts = 1 / np.log2(np.arange(2, 12))
    assert ndcg_at_k(hits, two, 10)[0] == pytest.approx(1.5 / (1 + 1 / np.log2(3)))
    assert ndcg_at_k(hits, four, 10)[0] == pytest.approx(1.5 / discounts[:4].sum())
    assert average_precision_at_k(hits, two, 10)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(hits, four, 10)[0] == pytest.approx((1 + 2 / 3) / 4)
    assert recall_at_k(hits, four, 10)[0] == pytest.approx(0.5)


def test_metrics_at_the_extremes() -> None:
    perfect = np.ones((1, 10), dtype=bool)
    many = np.array([25])  # more relevant items than k: the ideal is k hits
    assert ndcg_at_k(perfect, many, 10)[0] == pytest.approx(1.0)
    assert average_precision_at_k(perfect, many, 10)[0] == pytest.approx(1.0)
    assert recall_at_k(perfect, many, 10)[0] == pytest.approx(10 / 25)
    nothing = np.zeros((2, 10), dtype=bool)
    for metric in (ndcg_at_k, average_precision_at_k, recall_at_k):
        assert metric(nothing, np.array([3, 0]), 10).tolist() == [0.0, 0.0]


def test_catalog_coverage_ignores_padding() -> None:
    recommended = np.array([[0, 1, -1], [1, 2, -1]])
    assert catalog_coverage(recommended, 6) == pytest.approx(0.5)


def test_top_k_orders_and_drops_masked_items() -> None:
    scores = np.array([[0.1, 0.9, -np.inf, 0.5]], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [[1, 3, 0]]
    assert top_k(scores, 5).tolist() == [[1, 3, 0, -1, -1]]


# ---------------------------------------------------------------- split


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["customer_id"], frame["article_id"], strict=True))


def test_split_is_per_user_temporal_and_about_a_fifth() -> None:
    events = random_events(seed=3)
    split = temporal_split(events, test_fraction=0.2, min_user_events=5)
    assert len(split.train) + len(split.test) == len(events)
    sizes = events.groupby("customer_id").size()
    test_sizes = split.test.groupby("customer_id").size().reindex(sizes.index, fill_value=0)
    for user, n in sizes.items():
        expected = 0 if n < 5 else max(1, int(np.floor(n * 0.2 + 0.5)))
        assert test_sizes[user] == expected, user
        if expected:
            train_ts = split.train.loc[split.train["customer_id"] == user, "ts"]
            test_ts = split.test.loc[split.test["customer_id"] == user, "ts"]
            assert train_ts.max() <= test_ts.min(), user
    share = len(split.test) / len(events[events["customer_id"].map(sizes) >= 5])
    assert 0.17 < share < 0.23


def test_split_breaks_time_ties_by_original_order() -> None:
    events = events_frame([("u", f"i{j}", 0) for j in range(10)])
    split = temporal_split(events, test_fraction=0.2, min_user_events=5)
    assert split.test["article_id"].tolist() == ["i8", "i9"]


def test_validation_is_carved_from_train_only() -> None:
    # A user meets each item once, so a pair names one event.
    events = events_frame([(f"u{u}", f"i{j}", j) for u in range(20) for j in range(5 + u)])
    prepared = prepare_split(events, SplitConfig())
    outer = temporal_split(events, 0.2, 5)
    validation = prepared.validation
    rows, cols = validation.relevant.nonzero()
    held_out = {
        (validation.user_ids[validation.test_users[r]], validation.item_ids[c])
        for r, c in zip(rows, cols, strict=True)
    }
    assert held_out and held_out <= pairs(outer.train)
    assert pairs(validation.interactions) <= pairs(outer.train)
    assert not pairs(validation.interactions) & held_out
    assert validation.n_relevant.sum() + len(validation.interactions) == len(outer.train)
    assert prepared.summary.validation_train_events + prepared.summary.validation_test_events == (
        prepared.summary.train_events
    )
