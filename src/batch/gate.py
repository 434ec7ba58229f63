"""The promotion gate: a new version is measured on a temporal holdout of its own data
and is not promoted when it is worse than the live version by more than a margin."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batch.evaluation import (
    EvalConfig,
    RankingMetrics,
    align,
    build_task,
    evaluate_ranking,
    temporal_split,
)
from batch.trainer import Trainer
from recsys.model_store import Manifest

# A seeded sample of test users keeps the holdout cheap on real-size data.
HOLDOUT = EvalConfig(max_test_users=20_000)


def holdout_metrics(
    purchases: pd.DataFrame, trainer: Trainer, half_life_days: float
) -> RankingMetrics:
    """Fit the same trainer on all but each customer's last 20% of purchases; score @10."""
    events = pd.DataFrame(
        {
            "customer_id": purchases["customer_id"].to_numpy(),
            "article_id": purchases["article_id"].to_numpy(),
            "ts": pd.to_datetime(purchases["t_dat"]).to_numpy(),
            "weight": np.ones(len(purchases), dtype=np.float32),
        }
    )
    split = temporal_split(events, HOLDOUT.test_fraction, HOLDOUT.min_user_events)
    config = dataclasses.replace(HOLDOUT, interaction_half_life_days=half_life_days or None)
    task = build_task(split, config)
    factors = trainer.fit(task.interactions)
    return evaluate_ranking(align(factors, task), task, HOLDOUT.k)


def as_manifest_metrics(metrics: RankingMetrics) -> dict[str, float]:
    return {
        "holdout_ndcg_at_10": metrics.ndcg,
        "holdout_map_at_10": metrics.map,
        "holdout_recall_at_10": metrics.recall,
        "holdout_coverage_at_10": metrics.coverage,
    }


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def decide(new: Manifest, live: Manifest | None, max_drop: float, *, force: bool) -> GateDecision:
    if live is None:
        return GateDecision(True, "no live version yet")
    new_ndcg = new.metrics.get("holdout_ndcg_at_10")
    live_ndcg = live.metrics.get("holdout_ndcg_at_10")
    if new_ndcg is None or live_ndcg is None:
        return GateDecision(True, "no holdout metrics to compare")
    if new_ndcg >= live_ndcg - max_drop:
        return GateDecision(True, f"holdout NDCG@10 {new_ndcg:.4f} vs live {live_ndcg:.4f}")
    verdict = f"holdout NDCG@10 {new_ndcg:.4f} is below live {live_ndcg:.4f} - {max_drop}"
    if force:
        return GateDecision(True, f"forced: {verdict}")
    return GateDecision(False, verdict)
