"""Events frames for the evaluation's tests: hand-written rows, or random users."""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = pd.Timestamp("2020-01-01")


def events_frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(user, item, day offset) rows as an events frame."""
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "day"])
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "article_id": frame["article_id"],
            "ts": DAY + pd.to_timedelta(frame["day"], unit="D"),
            "weight": np.ones(len(frame), dtype=np.float32),
        }
    )


def random_events(seed: int) -> pd.DataFrame:
    """Users with 1 to 39 events over a few days (many ties) on items of skewed popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1 / np.arange(1, 41)
    rows = [
        (f"u{u}", f"i{rng.choice(40, p=popularity / popularity.sum())}", int(rng.integers(30)))
        for u in range(60)
        for _ in range(int(rng.integers(1, 40)))
    ]
    return events_frame(rows)
