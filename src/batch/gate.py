"""The promotion gate: a new version is measured on a temporal holdout of its own data
(batch.holdout) and is not promoted when it is worse than the live version by more than
a margin."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.model_store import Manifest
from recsys.ranking.metrics import RankingMetrics


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
