"""The weak-signals file: views, clicks and add-to-carts beside the H&M CSVs, written by
the generator (`recsys generate --weak-signals`) and read by the offline evaluation. Not
part of the H&M schema: a folder without it (the real data set) works as before."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pandas as pd
import pyarrow as pa

from recsys.events import EVENT_TYPES, PURCHASE

WEAK_SIGNALS_FILE: Final = "weak_signals.csv"
# t_dat as in transactions_train.csv (YYYY-MM-DD): a day, no time of day.
WEAK_SIGNALS_SCHEMA: Final = pa.schema(
    [
        ("t_dat", pa.string()),
        ("customer_id", pa.string()),
        ("article_id", pa.string()),
        ("event_type", pa.string()),
    ]
)
SIGNAL_TYPES: Final = tuple(t for t in EVENT_TYPES if t != PURCHASE)


def load_weak_signals(data_dir: Path) -> pd.DataFrame | None:
    """Columns customer_id, article_id (str), ts (datetime64[ns]), event_type; None when
    the folder has no weak-signals file. Rows of another event type are an error."""
    path = data_dir / WEAK_SIGNALS_FILE
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in WEAK_SIGNALS_SCHEMA.names if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    unknown = sorted(set(frame["event_type"]) - set(SIGNAL_TYPES))
    if unknown:
        raise ValueError(f"{path}: unknown event_type(s) {', '.join(unknown)}")
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(dtype=object),
            "article_id": frame["article_id"].to_numpy(dtype=object),
            "ts": pd.to_datetime(frame["t_dat"], format="%Y-%m-%d").to_numpy(
                dtype="datetime64[ns]"
            ),
            "event_type": frame["event_type"].to_numpy(dtype=object),
        }
    )
