"""The parameter search: every point of a grid fitted on the validation task's train
interactions and judged by NDCG@k on its held-out events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recsys.ranking.metrics import align, evaluate_ranking
from recsys.ranking.report import Report
from recsys.ranking.split import RankingTask
from recsys.trainer import Trainer

Params = dict[str, Any]


class GridPoint(Report):
    params: Params
    validation_ndcg: float
    fit_seconds: float


def search_grid(
    make_trainer: Callable[[Params], Trainer], grid: list[Params], task: RankingTask, k: int
) -> list[GridPoint]:
    points = []
    for params in grid:
        factors = make_trainer(params).fit(task.interactions)
        metrics = evaluate_ranking(align(factors, task), task, k)
        points.append(
            GridPoint(
                params=params, validation_ndcg=metrics.ndcg, fit_seconds=factors.train_seconds
            )
        )
    return points
