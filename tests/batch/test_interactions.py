"""Interaction weights: one per purchase day, decayed by age when a half-life is set."""

from __future__ import annotations

import pandas as pd
import pytest

from batch.interactions import build_interactions


def _tx(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "t_dat"])
    frame["t_dat"] = pd.to_datetime(frame["t_dat"])
    return frame


def test_same_day_units_count_once_and_days_add_up() -> None:
    tx = _tx([("c", "a", "2020-01-01"), ("c", "a", "2020-01-01"), ("c", "a", "2020-01-03")])
    out = build_interactions(tx)
    assert out["weight"].tolist() == [2.0]
    assert out["last_purchase"].tolist() == [pd.Timestamp("2020-01-03")]


def test_half_life_halves_the_weight_of_an_older_day() -> None:
    tx = _tx([("c", "old", "2020-01-01"), ("c", "new", "2020-01-31"), ("d", "x", "2020-01-31")])
    out = build_interactions(tx, half_life_days=30).set_index("article_id")["weight"]
    assert out["new"] == pytest.approx(1.0)
    assert out["old"] == pytest.approx(0.5)


def test_empty_input_gives_empty_interactions() -> None:
    assert build_interactions(_tx([]), half_life_days=10).empty
