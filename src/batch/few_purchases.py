"""Customers with one or two purchases (most customers of a fashion shop), measured on
the H&M week (batch.competition's split): trained on everything before the last 7 days,
judged on the customers who buy in them and had bought one or two distinct articles
before. Their vector (the pipeline's, its values searched as the batch searches them)
is set against trending (the batch's time-decayed popularity), trending within the
product groups they bought from, and the blend of the vector with each
(recsys.blend), the blend's weight chosen on the 7 days before. NDCG/MAP/Recall@10 and
coverage, own purchases never recommended (the API's default)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from batch.cold_start_eval import trending_model, trending_scores
from batch.competition import WEEK_DAYS, prepare_week_split
from batch.eval_config import EvalConfig
from batch.model_specs import ModelSpec, Reweighted, fit_chosen
from recsys.blend import TrendingSource, blend_scores
from recsys.ranking.metrics import RankingMetrics, Scorer, evaluate_ranking
from recsys.ranking.report import Report
from recsys.ranking.split import BoolArray, IntArray, RankingTask

K = 10
# The blend weights the validation week chooses from: 0 is the vector alone.
WEIGHTS = tuple(round(0.1 * step, 1) for step in range(11))
# Customers judged, by the distinct articles they bought before: each count alone, then
# together (the blend's weight is chosen on them together).
BUCKETS: tuple[tuple[str, int, int], ...] = (("1", 1, 1), ("2", 2, 2), ("1-2", 1, 2))
SOURCES: tuple[TrendingSource, ...] = ("overall", "group")

DESCRIPTION = (
    f"H&M week: train before the last {WEEK_DAYS} days; judged: the customers buying in "
    "them with one or two distinct articles bought before; NDCG/MAP/Recall@10, own "
    f"purchases excluded; blend weights chosen on the {WEEK_DAYS} days before"
)


class FewPurchasesRow(Report):
    purchases: str  # "1", "2" or "1-2": distinct articles bought before the week
    model: str
    weight: float | None  # the blend's trending weight, chosen on validation
    metrics: RankingMetrics


class FewPurchasesResult(Report):
    description: str
    trending_half_life_days: float
    chosen: dict[str, float]  # trending source -> the weight validation chose
    validation_ndcg: dict[str, dict[str, float]]  # source -> weight -> NDCG@10
    rows: list[FewPurchasesRow]
    seconds: float


@dataclass(frozen=True)
class GroupTrending:
    """Trending within the product groups each customer bought from (the task's train)."""

    item_scores: npt.NDArray[np.float32]
    item_groups: IntArray  # each item's group code; -1: none
    user_groups: sp.csr_matrix  # user x group: bought from it

    @property
    def has_user(self) -> BoolArray:
        return np.ones(self.user_groups.shape[0], dtype=bool)

    @property
    def has_item(self) -> BoolArray:
        has: BoolArray = self.item_scores > 0
        return has

    def scores(self, users: IntArray) -> npt.NDArray[np.float32]:
        bought = self.user_groups[users].toarray() > 0
        allowed = bought[:, np.maximum(self.item_groups, 0)] & (self.item_groups >= 0)
        out: npt.NDArray[np.float32] = np.where(allowed, self.item_scores, 0.0).astype(np.float32)
        return out


@dataclass(frozen=True)
class Blended:
    """A model's scores blended with trending's, each side scaled among the items the
    customer may be recommended (recsys.blend), as the API blends them."""

    personal: Scorer
    trending: Scorer
    weight: float
    seen: sp.csr_matrix  # the task's: never recommended, so not among the scaled

    @property
    def has_user(self) -> BoolArray:
        return self.personal.has_user

    @property
    def has_item(self) -> BoolArray:
        return self.personal.has_item

    def scores(self, users: IntArray) -> npt.NDArray[np.float32]:
        personal = self.personal.scores(users).astype(np.float32)
        personal[:, ~self.personal.has_item] = -np.inf
        rows, cols = self.seen[users].nonzero()
        personal[rows, cols] = -np.inf
        trending = self.trending.scores(users).astype(np.float32)
        blended: npt.NDArray[np.float32] = blend_scores(personal, trending, self.weight).astype(
            np.float32
        )
        return blended


def few_purchase_task(task: RankingTask, least: int, most: int) -> RankingTask:
    """The task judged on its test users with `least` to `most` distinct train items."""
    bought = task.seen.getnnz(axis=1)[task.test_users]
    keep = np.flatnonzero((bought >= least) & (bought <= most))
    return replace(
        task,
        test_users=task.test_users[keep],
        relevant=task.relevant[keep],
        n_relevant=task.n_relevant[keep],
    )


def _trending(task: RankingTask, half_life_days: float) -> npt.NDArray[np.float32]:
    if task.train_events is None:
        raise ValueError("the task holds no train events to rank trending from")
    scores: npt.NDArray[np.float32] = trending_scores(
        task.train_events, task.item_ids, half_life_days
    )
    return scores


def _group_trending(
    task: RankingTask, groups: pd.Series, scores: npt.NDArray[np.float32]
) -> GroupTrending:
    names = groups.reindex(pd.Index(task.item_ids)).replace("", np.nan)
    codes, _ = pd.factorize(names)  # NaN -> -1
    item_groups = np.asarray(codes, dtype=np.int64)
    size = max(1, int(item_groups.max()) + 1)
    items = np.flatnonzero(item_groups >= 0)
    onehot = sp.csr_matrix(
        (np.ones(len(items), np.float32), (items, item_groups[items])),
        shape=(len(task.item_ids), size),
    )
    user_groups = sp.csr_matrix(task.seen.astype(np.float32) @ onehot)
    return GroupTrending(scores, item_groups, user_groups)


def _trending_scorers(
    task: RankingTask, groups: pd.Series | None, half_life_days: float
) -> dict[TrendingSource, Scorer]:
    scores = _trending(task, half_life_days)
    out: dict[TrendingSource, Scorer] = {"overall": trending_model(len(task.user_ids), scores)}
    if groups is not None:
        out["group"] = _group_trending(task, groups, scores)
    return out


def choose_weight(personal: Scorer, trending: Scorer, task: RankingTask) -> dict[float, float]:
    """NDCG@10 of every blend weight on the task (the validation week)."""
    return {
        weight: evaluate_ranking(Blended(personal, trending, weight, task.seen), task, K).ndcg
        for weight in WEIGHTS
    }


def run_few_purchases(
    events: pd.DataFrame,
    groups: pd.Series | None,
    pipeline: ModelSpec,
    config: EvalConfig,
    trending_half_life_days: float,
) -> FewPurchasesResult:
    """events: batch.evaluation_data's frame; groups: article id -> product group (None:
    no groups, so no group trending)."""
    started = time.perf_counter()
    split = prepare_week_split(events, replace(config, k=K, max_test_users=None))
    chosen = fit_chosen(pipeline, split)
    validation = Reweighted(split.validation)(chosen.search.chosen)
    inner_model = pipeline.fit(chosen.search.chosen, validation)
    inner_few = few_purchase_task(validation, 1, 2)
    if len(inner_few.test_users) == 0:
        raise ValueError("no customer with one or two purchases buys in the week before the last")
    inner_trending = _trending_scorers(validation, groups, trending_half_life_days)
    curves = {
        source: choose_weight(inner_model, scorer, inner_few)
        for source, scorer in inner_trending.items()
    }
    weights = {source: max(curve, key=lambda w: curve[w]) for source, curve in curves.items()}
    test = chosen.task
    if len(few_purchase_task(test, 1, 2).test_users) == 0:
        raise ValueError("no customer with one or two purchases buys in the last week")
    test_trending = _trending_scorers(test, groups, trending_half_life_days)
    models: list[tuple[str, float | None, Scorer]] = [("vector", None, chosen.model)]
    for source, scorer in test_trending.items():
        name = "trending" if source == "overall" else "group trending"
        blended = Blended(chosen.model, scorer, weights[source], test.seen)
        models += [(name, None, scorer), (f"vector + {name}", weights[source], blended)]
    rows = [
        FewPurchasesRow(
            purchases=label,
            model=name,
            weight=weight,
            metrics=evaluate_ranking(model, few_purchase_task(test, least, most), K),
        )
        for label, least, most in BUCKETS
        for name, weight, model in models
    ]
    return FewPurchasesResult(
        description=DESCRIPTION,
        trending_half_life_days=trending_half_life_days,
        chosen={source: float(w) for source, w in weights.items()},
        validation_ndcg={
            source: {f"{w:.1f}": ndcg for w, ndcg in curve.items()}
            for source, curve in curves.items()
        },
        rows=rows,
        seconds=time.perf_counter() - started,
    )


def few_purchases_table(result: FewPurchasesResult) -> Table:
    table = Table(title="Customers with one or two purchases: the vector, trending, blends")
    for column in ("purchases", "model", "weight", "users", f"NDCG@{K}", f"MAP@{K}",
                   f"Recall@{K}", "coverage"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("purchases", "model") else "right")
    for row in result.rows:
        m = row.metrics
        table.add_row(
            row.purchases,
            row.model,
            "" if row.weight is None else f"{row.weight:.1f}",
            f"{m.users:,}",
            f"{m.ndcg:.4f}",
            f"{m.map:.4f}",
            f"{m.recall:.4f}",
            f"{m.coverage:.1%}",
        )
    return table


def print_few_purchases(result: FewPurchasesResult, console: Console) -> None:
    console.print(result.description)
    console.print(
        "blend weights chosen on validation: "
        + ", ".join(f"{source} {w:.1f}" for source, w in result.chosen.items())
    )
    console.print(few_purchases_table(result))
    console.print(f"{result.seconds:.1f} s")


def article_groups(articles: pd.DataFrame) -> pd.Series:
    """article id -> product group, from the H&M articles rows."""
    frame = articles.drop_duplicates("article_id")
    return pd.Series(
        frame["product_group_name"].to_numpy(), index=frame["article_id"].astype(str).to_numpy()
    )


def pipeline_spec(specs: Sequence[ModelSpec]) -> ModelSpec:
    return next(spec for spec in specs if spec.pipeline)
