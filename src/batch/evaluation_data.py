"""Load a data folder (H&M schema or MovieLens ratings.tsv) as one implicit-feedback events
frame for the offline evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from batch.ingest import clean_purchases
from recsys.hm_schema import TRANSACTIONS_FILE

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MOVIELENS_FILE = "ratings.tsv"
MOVIELENS_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
EVENT_COLUMNS = ("customer_id", "article_id", "ts", "weight")

Source = Literal["hm", "movielens"]


class EventsSummary(BaseModel):
    """What a loaded events frame holds."""

    users: int
    items: int
    events: int
    first: str | None
    last: str | None


def detect_source(data_dir: Path) -> Source:
    if (data_dir / TRANSACTIONS_FILE).is_file():
        return "hm"
    if (data_dir / MOVIELENS_FILE).is_file():
        return "movielens"
    raise ValueError(
        f"{data_dir}: not an evaluation data folder "
        f"(expected {TRANSACTIONS_FILE} for H&M or {MOVIELENS_FILE} for MovieLens)"
    )


def load_events(data_dir: Path, spark: SparkSession | None = None) -> pd.DataFrame:
    """Columns customer_id, article_id (str), ts (datetime64[ns]), weight (float32).

    An H&M folder goes through the batch's own Spark cleaning, so it needs a session."""
    if detect_source(data_dir) == "hm":
        if spark is None:
            raise ValueError(f"{data_dir} is an H&M folder: reading it needs a Spark session")
        return load_hm_events(data_dir, spark)
    return load_movielens_events(data_dir)


def load_hm_events(data_dir: Path, spark: SparkSession) -> pd.DataFrame:
    purchases, _ = clean_purchases(spark, data_dir)
    transactions = purchases.select("customer_id", "article_id", "t_dat").toPandas()
    return _events(transactions["customer_id"], transactions["article_id"], transactions["t_dat"])


def load_movielens_events(data_dir: Path) -> pd.DataFrame:
    """Every rating counts as one interaction, whatever its value: implicit feedback."""
    path = data_dir / MOVIELENS_FILE
    header = pd.read_csv(path, sep="\t", nrows=0).columns
    missing = [c for c in MOVIELENS_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    ratings = pd.read_csv(
        path,
        sep="\t",
        usecols=["user_id", "item_id", "timestamp"],
        dtype={"user_id": str, "item_id": str, "timestamp": np.int64},
    )
    ts = pd.to_datetime(ratings["timestamp"], unit="s")
    return _events(ratings["user_id"], ratings["item_id"], ts)


def _events(customers: pd.Series, articles: pd.Series, ts: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customers.astype(str).to_numpy(dtype=object),
            "article_id": articles.astype(str).to_numpy(dtype=object),
            "ts": pd.to_datetime(ts).to_numpy(dtype="datetime64[ns]"),
            "weight": np.ones(len(customers), dtype=np.float32),
        }
    )


def describe_events(events: pd.DataFrame) -> EventsSummary:
    empty = events.empty
    return EventsSummary(
        users=int(events["customer_id"].nunique()),
        items=int(events["article_id"].nunique()),
        events=len(events),
        first=None if empty else str(events["ts"].min()),
        last=None if empty else str(events["ts"].max()),
    )
