"""The promotion gate's holdout at any size: each customer's last purchases held out by a
Spark job, the trainer fitted on the rest exactly as the batch fits it (from a Delta
table, streamed), and a seeded sample of customers judged on what they bought next.

Only the sample's rows reach the driver (~20k customers: ~0.5M rows), so the holdout's
memory does not grow with the data set; the fit's does, as the batch's own fit does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batch.interactions import interactions_job
from batch.lake import Lake
from batch.stored_interactions import StoredInteractions
from recsys.ranking.metrics import RankingMetrics, align, evaluate_ranking
from recsys.ranking.split import RankingTask, binary_csr, pairs_seen
from recsys.trainer import Factors, Trainer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

IS_TEST = "is_test"
HOLDOUT_TABLE = ("silver", "holdout_interactions")


@dataclass(frozen=True)
class HoldoutConfig:
    k: int = 10
    test_fraction: float = 0.2
    min_user_events: int = 5  # customers with fewer purchases are never judged
    customers: int = 20_000  # judged customers, a seeded sample of those eligible
    seed: int = 0


def split_job(purchases: DataFrame, test_fraction: float, min_user_events: int) -> DataFrame:
    """purchases (customer_id, article_id, t_dat) with `is_test`: each customer's last
    test_fraction of purchases (at least one), for customers with min_user_events or more.
    The rule of `batch.evaluation.temporal_split`; purchases of one day are ordered by
    article_id (a table has no file order)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_customer = Window.partitionBy("customer_id")
    in_order = by_customer.orderBy("t_dat", "article_id")
    size = F.count(F.lit(1)).over(by_customer)
    position = F.row_number().over(in_order) - 1
    n_test = F.greatest(F.lit(1), F.floor(size * F.lit(test_fraction) + F.lit(0.5)))
    return purchases.select("customer_id", "article_id", "t_dat").withColumn(
        IS_TEST, (size >= min_user_events) & (position >= size - n_test)
    )


def sample_customers(split: DataFrame, config: HoldoutConfig) -> DataFrame:
    """customer_id of up to config.customers customers with held-out purchases, chosen by
    a seeded hash (the same customers for the same data, whatever the partitioning)."""
    from pyspark.sql import functions as F

    eligible = split.where(F.col(IS_TEST)).select("customer_id").distinct()
    order = F.xxhash64(F.col("customer_id"), F.lit(config.seed))
    return eligible.orderBy(order, "customer_id").limit(config.customers)


@dataclass(frozen=True)
class HeldOut:
    """Purchases split for judging: the rows a model may train on, and the judged
    customers' held-out purchases (on the driver; the sample keeps them small)."""

    train: DataFrame  # customer_id, article_id, t_dat
    judged: DataFrame  # customer_id of the judged sample
    held_out: pd.DataFrame  # customer_id, article_id, t_dat of the judged customers' test rows


def training_rows(split: DataFrame) -> DataFrame:
    """The rows of a split_job's output a model may train on."""
    from pyspark.sql import functions as F

    return split.where(~F.col(IS_TEST)).drop(IS_TEST)


def hold_out(purchases: DataFrame, config: HoldoutConfig) -> HeldOut:
    """Each customer's last purchases held out (split_job), a seeded sample judged."""
    from pyspark.sql import functions as F

    split = split_job(purchases, config.test_fraction, config.min_user_events)
    judged = F.broadcast(sample_customers(split, config))
    held_out = split.where(F.col(IS_TEST)).join(judged, "customer_id")
    return HeldOut(
        train=training_rows(split),
        judged=judged,
        held_out=held_out.select("customer_id", "article_id", "t_dat").toPandas(),
    )


def train_interactions(
    lake: Lake, held: HeldOut, half_life_days: float | None, table: tuple[str, str]
) -> StoredInteractions:
    """The interactions of the training rows, written as the batch writes its own."""
    lake.write(interactions_job(held.train, half_life_days or None), *table)
    return StoredInteractions.of(lake, *table)


def judged_seen(held: HeldOut, stored: StoredInteractions) -> pd.DataFrame:
    """What the judged customers bought in training (customer_id, article_id, and the
    pair's weight and last_purchase): masked when ranking, their history when replayed."""
    seen = stored.frame.join(held.judged, "customer_id")
    return seen.select("customer_id", "article_id", "weight", "last_purchase").toPandas()


@dataclass(frozen=True)
class Judged:
    """A fit judged on a holdout: its metrics, the model, and what the judged customers
    bought in its training rows (judged_seen)."""

    metrics: RankingMetrics
    factors: Factors
    seen: pd.DataFrame


def judge_fit(
    held: HeldOut,
    stored: StoredInteractions,
    trainer: Trainer,
    config: HoldoutConfig,
    seen: pd.DataFrame | None = None,
) -> Judged:
    """Fit `trainer` on `stored`; NDCG/MAP/recall@k and coverage of the judged customers'
    held-out purchases, ranking every item they did not buy (`seen`: judged_seen's
    answer, when the caller kept it)."""
    factors = trainer.fit(stored)
    masked = judged_seen(held, stored) if seen is None else seen
    task = sampled_task(masked, held.held_out, factors)
    return Judged(evaluate_ranking(align(factors, task), task, config.k), factors, masked)


def judge(
    held: HeldOut,
    stored: StoredInteractions,
    trainer: Trainer,
    config: HoldoutConfig,
    seen: pd.DataFrame | None = None,
) -> RankingMetrics:
    """judge_fit's metrics."""
    return judge_fit(held, stored, trainer, config, seen).metrics


def holdout_fit(
    lake: Lake,
    purchases: DataFrame,
    trainer: Trainer,
    half_life_days: float | None,
    config: HoldoutConfig,
) -> tuple[HeldOut, Judged]:
    """The promotion gate's measure: `trainer` fitted on all but the held-out purchases,
    judged on what the sampled customers bought next; with the split and the fit, for
    the choice of the online update (batch.online_update)."""
    held = hold_out(purchases, config)
    stored = train_interactions(lake, held, half_life_days, HOLDOUT_TABLE)
    return held, judge_fit(held, stored, trainer, config)


def holdout_metrics(
    lake: Lake,
    purchases: DataFrame,
    trainer: Trainer,
    half_life_days: float | None,
    config: HoldoutConfig,
) -> RankingMetrics:
    """holdout_fit's metrics."""
    return holdout_fit(lake, purchases, trainer, half_life_days, config)[1].metrics


def sampled_task(seen: pd.DataFrame, held_out: pd.DataFrame, factors: Factors) -> RankingTask:
    """The ranking task of the judged customers: their training items masked, their
    held-out items relevant, every item the model was trained on ranked."""
    users = pd.Index(np.sort(held_out["customer_id"].unique()))
    items = pd.Index(np.sort(np.asarray(factors.item_ids, dtype=object)))
    seen_rows = users.get_indexer(seen["customer_id"]).astype(np.int64)
    seen_cols = items.get_indexer(seen["article_id"]).astype(np.int64)
    keep = (seen_rows >= 0) & (seen_cols >= 0)
    rows = users.get_indexer(held_out["customer_id"]).astype(np.int64)
    cols = items.get_indexer(held_out["article_id"]).astype(np.int64)
    known = cols >= 0
    shape = (len(users), len(items))
    seen_matrix = binary_csr(seen_rows[keep], seen_cols[keep], shape)
    relevant = binary_csr(rows[known], cols[known], shape)
    distinct = held_out[["customer_id", "article_id"]].drop_duplicates()
    n_relevant = users.get_indexer(distinct["customer_id"])
    return RankingTask(
        interactions=pd.DataFrame({"customer_id": [], "article_id": [], "weight": []}),
        user_ids=np.asarray(users, dtype=object),
        item_ids=np.asarray(items, dtype=object),
        seen=seen_matrix,
        test_users=np.arange(len(users), dtype=np.int64),
        relevant=relevant,
        n_relevant=np.bincount(n_relevant, minlength=len(users)).astype(np.int64),
        replay_users=np.zeros(0, dtype=np.int64),
        replay_items=np.zeros(0, dtype=np.int64),
        test_events_unknown_item=int((~known).sum()),
        test_pairs_seen_in_train=pairs_seen(seen_matrix, rows[known], cols[known]),
    )
