"""Cold start, measured: articles held out as new get content vectors (batch.content_vectors)
and compete in the full catalogue; customers with one purchase are served from it.

The split (`ColdStartConfig`, defaults in brackets):
- the last `test_days` [28] days of purchases are the test period, the rest train;
- of the articles bought in the test period, a seeded [0] `new_fraction` [10%] are new:
  every purchase of them, in train and in test, is withheld from training, so ALS never
  sees them; like every other catalogue article without a train purchase, they are
  placed by content, as the batch places unbought articles;
- ALS (the project's implicit trainer at the settings' defaults, or any `Trainer`) trains
  on the remaining train purchases with the batch's interaction decay; the content map is
  fitted on its item factors.

What is measured, with batch.evaluation's NDCG/MAP/Recall@k and coverage:
- new articles: customers with an ALS vector who bought a new article in the test period;
  relevant are the new articles they bought then. Ranked: the full catalogue (ALS and
  content-placed items, their train purchases masked), and a "new for you" list of the
  content-placed articles alone. Against trending (time-decayed popularity of the train
  purchases: it holds no new article) and, on the "new for you" list, the same content
  vectors shuffled among the placed articles (is it the content that places them?), the
  articles of the customer's favourite product group by the popularity of their product
  type, and the same by their own test-period sales (an oracle: it knows what sells);
- exposure: the content vectors as fitted are shrunk towards the mean, so they rarely
  outscore a bestseller; rescaled to a quantile of the ALS item norms they compete, and
  the sweep shows what that buys for new articles and costs on every purchase;
- all purchases: the same customers' whole test basket, to see what placing new articles
  costs the rest: ALS alone (no content-placed item) against ALS with them, and trending;
- one purchase: customers with exactly one train purchase (a new article's included) and
  a test purchase. Their vector is the updater's EMA from zero (recsys.ema.ema_update with
  no user vector: the bought item's direction at the median ALS user norm, so the rate
  does not matter), or, where ALS saw the purchase, their ALS user factors; vs trending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from batch.content_vectors import (
    Placement,
    fit_content_model,
    place_by_content,
)
from batch.evaluation_data import EventsSummary, describe_events, detect_source, load_events
from batch.implicit_trainer import ImplicitTrainer
from recsys.content_model import ContentFit
from recsys.ema import ema_update
from recsys.hm_schema import ARTICLES_FILE
from recsys.index.base import CONTENT
from recsys.ranking.metrics import (
    SCORE_CELLS,
    AlignedFactors,
    RankingMetrics,
    evaluate_ranking,
    recommend,
    row_chunks,
)
from recsys.ranking.split import RankingTask, binary_csr, to_interactions
from recsys.settings import Settings
from recsys.trainer import Factors, Trainer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

IntArray = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
GROUP_FIELD = "product_group_name"
TYPE_FIELD = "product_type_name"
SECONDS_PER_DAY = 86_400.0


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def default_als() -> dict[str, Any]:
    """The batch's implicit ALS at the settings' defaults."""
    return {
        "factors": _default("implicit_factors"),
        "iterations": _default("implicit_iterations"),
        "regularization": _default("implicit_regularization"),
        "alpha": _default("implicit_alpha"),
        "seed": _default("als_seed"),
    }


@dataclass(frozen=True)
class ColdStartConfig:
    k: int = 10
    test_days: int = 28
    new_fraction: float = 0.1
    seed: int = 0
    als: dict[str, Any] = field(default_factory=default_als)
    interaction_half_life_days: float | None = _default("interaction_half_life_days")
    trending_half_life_days: float = _default("trending_half_life_days")
    ema_rate: float = _default("ema_rate")
    exposure_quantiles: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)

    def describe(self) -> str:
        return (
            f"test period: the last {self.test_days} days; new articles: a random "
            f"{self.new_fraction:.0%} (seed {self.seed}) of those bought in it, every purchase "
            "of them withheld from training; ranked: the full catalogue, train purchases "
            "masked"
        )


# ---------------------------------------------------------------- results


class ModelRow(BaseModel):
    model: str
    metrics: RankingMetrics
    content_share: float | None = None  # of the top-k slots filled, content-placed items


class ExposurePoint(BaseModel):
    """Content vectors rescaled to the `quantile` of ALS item norms (None: as fitted)."""

    quantile: float | None
    median_norm: float  # of the content vectors
    new_recall: float  # Recall@k of new articles bought, full catalogue
    new_ndcg: float
    all_ndcg: float  # NDCG@k of every test purchase, full catalogue
    all_recall: float
    content_share: float


class SplitFacts(BaseModel):
    description: str
    k: int
    cutoff: str
    train_events: int
    test_events: int
    catalogue: int
    als_items: int
    content_placed: int
    new_articles: int
    new_article_test_events: int
    one_purchase_customers: int


class ColdStartResult(BaseModel):
    data: EventsSummary
    split: SplitFacts
    content: ContentFit
    new_articles: list[ModelRow]
    all_purchases: list[ModelRow]
    one_purchase: list[ModelRow]
    exposure: list[ExposurePoint]
    train_seconds: float
    content_seconds: float
    seconds: float

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


# ---------------------------------------------------------------- split


@dataclass(frozen=True)
class ColdStartSplit:
    train: pd.DataFrame  # every train-period purchase, the new articles' included
    test: pd.DataFrame
    new_articles: npt.NDArray[np.object_]
    cutoff: pd.Timestamp

    @property
    def known_train(self) -> pd.DataFrame:
        """What ALS trains on: the train purchases of articles that are not new."""
        return self.train[~self.train["article_id"].isin(self.new_articles)]


def split_cold_start(
    events: pd.DataFrame, catalogue: pd.Index, config: ColdStartConfig
) -> ColdStartSplit:
    events = events[events["article_id"].isin(catalogue)]
    if events.empty:
        raise ValueError("no purchase of a catalogue article")
    cutoff = events["ts"].max().normalize() - pd.Timedelta(days=config.test_days - 1)
    in_test = (events["ts"] >= cutoff).to_numpy()
    test = events[in_test]
    sold = np.sort(test["article_id"].unique())
    if len(sold) == 0 or in_test.all():
        raise ValueError(f"the last {config.test_days} days leave no train or no test period")
    count = max(1, round(config.new_fraction * len(sold)))
    rng = np.random.default_rng(config.seed)
    new = np.sort(rng.choice(sold, size=count, replace=False)).astype(object)
    return ColdStartSplit(events[~in_test], test, new, cutoff)


# ---------------------------------------------------------------- tasks in evaluation's shape


def _codes(index: pd.Index, values: pd.Series) -> IntArray:
    return index.get_indexer(pd.Index(values.to_numpy())).astype(np.int64)


def ranking_task(
    user_ids: npt.NDArray[np.object_],
    item_ids: npt.NDArray[np.object_],
    seen: pd.DataFrame,
    relevant: pd.DataFrame,
) -> RankingTask:
    """batch.evaluation's task over a given catalogue: `seen` purchases are masked, the
    `relevant` ones (of the listed users and items) are what is judged."""
    users, items = pd.Index(user_ids), pd.Index(item_ids)
    seen_users, seen_items = _codes(users, seen["customer_id"]), _codes(items, seen["article_id"])
    known = (seen_users >= 0) & (seen_items >= 0)
    seen_matrix = binary_csr(seen_users[known], seen_items[known], (len(users), len(items)))
    test_users, test_items = (
        _codes(users, relevant["customer_id"]),
        _codes(items, relevant["article_id"]),
    )
    keep = (test_users >= 0) & (test_items >= 0)
    judged = np.unique(test_users[keep])
    rows = np.searchsorted(judged, test_users[keep])
    relevant_matrix = binary_csr(rows, test_items[keep], (len(judged), len(items)))
    masked = seen_matrix[judged[rows], test_items[keep]]
    return RankingTask(
        interactions=pd.DataFrame(columns=["customer_id", "article_id", "weight"]),
        user_ids=np.asarray(user_ids, dtype=object),
        item_ids=np.asarray(item_ids, dtype=object),
        seen=seen_matrix,
        test_users=judged.astype(np.int64),
        relevant=relevant_matrix,
        n_relevant=np.diff(relevant_matrix.indptr).astype(np.int64),
        replay_users=np.empty(0, dtype=np.int64),
        replay_items=np.empty(0, dtype=np.int64),
        test_events_unknown_item=int((~keep).sum()),
        test_pairs_seen_in_train=int(np.asarray(masked).sum()),
    )


# ---------------------------------------------------------------- the models compared


def _model(
    users: Vectors, items: Vectors, has_item: npt.NDArray[np.bool_], default_norm: float = 1.0
) -> AlignedFactors:
    return AlignedFactors(
        users=np.ascontiguousarray(users, dtype=np.float32),
        items=np.ascontiguousarray(items, dtype=np.float32),
        has_user=np.linalg.norm(users, axis=1) > 0,
        has_item=has_item,
        default_norm=default_norm,
    )


def trending_scores(
    train: pd.DataFrame, item_ids: npt.NDArray[np.object_], half_life_days: float
) -> Vectors:
    """Each item's train purchases weighted 2^(-age/half-life), as the batch's trending job
    scores them; 0 for an item nobody bought."""
    age = (train["ts"].max() - train["ts"]).dt.total_seconds() / SECONDS_PER_DAY
    weights = np.exp2(-age.to_numpy(dtype=np.float64) / half_life_days)
    scores = pd.Series(weights).groupby(train["article_id"].to_numpy()).sum()
    return scores.reindex(item_ids, fill_value=0.0).to_numpy(dtype=np.float32)


def trending_model(n_users: int, scores: Vectors) -> AlignedFactors:
    """Every user the same list: a rank-1 model, items nobody bought left out."""
    return _model(np.ones((n_users, 1), np.float32), scores[:, None], scores > 0)


def favourite_group_model(
    task: RankingTask,
    train: pd.DataFrame,
    groups: pd.Series,
    item_scores: Vectors,
    candidates: npt.NDArray[np.bool_],
) -> AlignedFactors:
    """The candidate items of each user's most bought product group, by item_scores: users
    are one-hot groups, items their group's one-hot times their score."""
    names = pd.Index(sorted(set(groups.dropna()) - {""}))
    bought = train.assign(group=train["article_id"].map(groups)).dropna(subset=["group"])
    favourite = bought.groupby("customer_id")["group"].agg(lambda g: g.value_counts().index[0])
    users = np.zeros((len(task.user_ids), len(names)), np.float32)
    rows = _codes(pd.Index(task.user_ids), pd.Series(favourite.index))
    cols = _codes(names, favourite)
    found = (rows >= 0) & (cols >= 0)
    users[rows[found], cols[found]] = 1.0
    items = np.zeros((len(task.item_ids), len(names)), np.float32)
    item_groups = _codes(names, groups.reindex(task.item_ids))
    has_group = item_groups >= 0
    items[np.flatnonzero(has_group), item_groups[has_group]] = item_scores[has_group]
    return _model(users, items, candidates)


def type_popularity(
    item_ids: npt.NDArray[np.object_], trending: Vectors, types: pd.Series
) -> Vectors:
    """Each item's product type's trending score: what a shop knows of an unsold article."""
    item_types = types.reindex(item_ids).to_numpy()
    per_type = pd.Series(trending).groupby(item_types).sum()
    return pd.Series(item_types).map(per_type).fillna(0.0).to_numpy(dtype=np.float32)


def content_share(
    model: AlignedFactors, task: RankingTask, is_content: npt.NDArray[np.bool_], k: int
) -> float:
    """Of the top-k slots filled for the judged users, the share held by content-placed items."""
    judged = task.test_users[model.has_user[task.test_users]]
    filled = placed = 0
    for chunk in row_chunks(len(judged), max(1, SCORE_CELLS // max(1, len(task.item_ids)))):
        top = recommend(model, task.seen[judged[chunk]], judged[chunk], k)
        filled += int((top >= 0).sum())
        placed += int(is_content[top[top >= 0]].sum())
    return placed / filled if filled else 0.0


def _shuffled(items: Vectors, is_content: npt.NDArray[np.bool_], seed: int) -> Vectors:
    out = items.copy()
    rows = np.flatnonzero(is_content)
    out[rows] = items[np.random.default_rng(seed).permutation(rows)]
    return out


# ---------------------------------------------------------------- the three questions


@dataclass(frozen=True)
class _Fitted:
    factors: Factors  # ALS
    placement: Placement  # ALS items, then the content-placed ones
    trending: Vectors  # per item of placement.factors
    default_norm: float

    @property
    def items(self) -> Vectors:
        return self.placement.factors.item_factors

    @property
    def item_ids(self) -> npt.NDArray[np.object_]:
        return self.placement.factors.item_ids

    @property
    def is_content(self) -> npt.NDArray[np.bool_]:
        flags: npt.NDArray[np.bool_] = self.placement.placed_by == CONTENT
        return flags


@dataclass(frozen=True)
class _Tasks:
    new: RankingTask  # relevant: the new articles bought in the test period
    every: RankingTask  # relevant: every test purchase
    new_test: pd.DataFrame


def _tasks(fitted: _Fitted, split: ColdStartSplit) -> _Tasks:
    users, items = fitted.factors.user_ids, fitted.item_ids
    new_test = split.test[split.test["article_id"].isin(split.new_articles)]
    return _Tasks(
        new=ranking_task(users, items, split.known_train, new_test),
        every=ranking_task(users, items, split.known_train, split.test),
        new_test=new_test,
    )


def _new_article_rows(
    fitted: _Fitted,
    split: ColdStartSplit,
    tasks: _Tasks,
    catalogue: pd.DataFrame,
    config: ColdStartConfig,
) -> tuple[list[ModelRow], list[ModelRow]]:
    als, items, content, k = fitted.factors.user_factors, fitted.items, fitted.is_content, config.k
    every_item = np.ones(len(fitted.item_ids), dtype=bool)
    with_content = _model(als, items, every_item)
    trending = trending_model(len(als), fitted.trending)
    by_article = catalogue.set_index("article_id")
    groups = by_article[GROUP_FIELD]
    sales = tasks.new_test["article_id"].value_counts().reindex(fitted.item_ids, fill_value=0)

    def row(name: str, model: AlignedFactors, task: RankingTask = tasks.new) -> ModelRow:
        return ModelRow(
            model=name,
            metrics=evaluate_ranking(model, task, k),
            content_share=content_share(model, task, content, k),
        )

    new_rows = [
        row("full catalogue: ALS + content-placed", with_content),
        row("trending", trending),
        row("new for you: by content vector", _model(als, items, content)),
        row(
            "new for you: content vectors shuffled",
            _model(als, _shuffled(items, content, config.seed), content),
        ),
        row(
            "new for you: favourite group, by type popularity",
            favourite_group_model(
                tasks.new,
                split.known_train,
                groups,
                type_popularity(fitted.item_ids, fitted.trending, by_article[TYPE_FIELD]),
                content,
            ),
        ),
        row(
            "new for you: favourite group, by test sales (oracle)",
            favourite_group_model(
                tasks.new, split.known_train, groups, np.asarray(sales, np.float32), content
            ),
        ),
    ]
    all_rows = [
        row("ALS + content-placed", with_content, tasks.every),
        row("ALS alone", _model(als, items, ~content), tasks.every),
        row("trending", trending, tasks.every),
    ]
    return new_rows, all_rows


def exposure_sweep(
    fitted: _Fitted, tasks: _Tasks, quantiles: tuple[float, ...], k: int
) -> list[ExposurePoint]:
    """The content vectors' directions at the given quantiles of the ALS item norms."""
    content = fitted.is_content
    als_norms = np.linalg.norm(fitted.factors.item_factors, axis=1)
    placed = fitted.items[content]
    norms = np.linalg.norm(placed, axis=1, keepdims=True)
    directions = np.divide(placed, norms, out=np.zeros_like(placed), where=norms > 0)
    points = []
    for quantile in (None, *quantiles):
        items = fitted.items.copy()
        if quantile is not None:
            items[content] = directions * np.float32(np.quantile(als_norms, quantile))
        model = _model(fitted.factors.user_factors, items, np.ones(len(items), dtype=bool))
        new = evaluate_ranking(model, tasks.new, k)
        every = evaluate_ranking(model, tasks.every, k)
        points.append(
            ExposurePoint(
                quantile=quantile,
                median_norm=float(np.median(np.linalg.norm(items[content], axis=1)))
                if content.any()
                else 0.0,
                new_recall=new.recall,
                new_ndcg=new.ndcg,
                all_ndcg=every.ndcg,
                all_recall=every.recall,
                content_share=content_share(model, tasks.every, content, k),
            )
        )
    return points


def one_purchase_customers(train: pd.DataFrame) -> pd.DataFrame:
    """(customer_id, article_id) of the customers with exactly one train purchase."""
    counts = train["customer_id"].value_counts()
    once = train[train["customer_id"].isin(counts.index[counts == 1])]
    return once[["customer_id", "article_id"]].sort_values("customer_id").reset_index(drop=True)


def _one_purchase_rows(
    fitted: _Fitted, split: ColdStartSplit, config: ColdStartConfig
) -> tuple[list[ModelRow], int]:
    once = one_purchase_customers(split.train)
    customers = once["customer_id"].to_numpy(dtype=object)
    task = ranking_task(customers, fitted.item_ids, once, split.test)
    item_rows = _codes(pd.Index(fitted.item_ids), once["article_id"])
    ema = np.zeros((len(customers), fitted.items.shape[1]), np.float32)
    for row, item in enumerate(item_rows):
        if item >= 0:  # an article outside the catalogue has no vector to start from
            ema[row] = ema_update(None, fitted.items[item], config.ema_rate, fitted.default_norm)
    als_rows = _codes(pd.Index(fitted.factors.user_ids), once["customer_id"])
    als = np.zeros_like(ema)
    als[als_rows >= 0] = fitted.factors.user_factors[als_rows[als_rows >= 0]]
    every_item = np.ones(len(fitted.item_ids), dtype=bool)
    models = (
        ("EMA from the purchase", _model(ema, fitted.items, every_item)),
        ("ALS user factors", _model(als, fitted.items, every_item)),
        ("trending", trending_model(len(customers), fitted.trending)),
    )
    rows = [
        ModelRow(
            model=name,
            metrics=evaluate_ranking(model, task, config.k),
            content_share=content_share(model, task, fitted.is_content, config.k),
        )
        for name, model in models
    ]
    return rows, len(customers)


# ---------------------------------------------------------------- entry points


def _catalogue(articles: pd.DataFrame) -> pd.DataFrame:
    frame = articles.assign(article_id=articles["article_id"].astype(str))
    return frame.drop_duplicates("article_id").reset_index(drop=True)


def evaluate_cold_start(
    events: pd.DataFrame,
    articles: pd.DataFrame,
    config: ColdStartConfig | None = None,
    trainer: Trainer | None = None,
) -> ColdStartResult:
    """events: customer_id, article_id, ts (batch.evaluation_data's frame); articles: the
    H&M articles rows. Purchases of articles outside the catalogue are dropped."""
    started = time.perf_counter()
    config = config or ColdStartConfig()
    catalogue = _catalogue(articles)
    split = split_cold_start(events, pd.Index(catalogue["article_id"]), config)
    known = split.known_train
    interactions = to_interactions(known, config.interaction_half_life_days)
    factors = (trainer or ImplicitTrainer.from_params(config.als)).fit(interactions)
    content_started = time.perf_counter()
    purchases = interactions.groupby("article_id")["weight"].sum()
    content = fit_content_model(
        catalogue, factors.item_ids, factors.item_factors, purchases=purchases, seed=config.seed
    )
    placement = place_by_content(factors, catalogue, content)
    content_seconds = time.perf_counter() - content_started
    norms = np.linalg.norm(factors.user_factors, axis=1)
    fitted = _Fitted(
        factors=factors,
        placement=placement,
        trending=trending_scores(known, placement.factors.item_ids, config.trending_half_life_days),
        default_norm=float(np.median(norms)) if len(norms) else 1.0,
    )
    tasks = _tasks(fitted, split)
    new_rows, all_rows = _new_article_rows(fitted, split, tasks, catalogue, config)
    once_rows, once = _one_purchase_rows(fitted, split, config)
    return ColdStartResult(
        data=describe_events(events),
        split=SplitFacts(
            description=config.describe(),
            k=config.k,
            cutoff=str(split.cutoff.date()),
            train_events=len(split.train),
            test_events=len(split.test),
            catalogue=len(catalogue),
            als_items=len(factors.item_ids),
            content_placed=placement.content_placed,
            new_articles=len(split.new_articles),
            new_article_test_events=int(split.test["article_id"].isin(split.new_articles).sum()),
            one_purchase_customers=once,
        ),
        content=content.fit,
        new_articles=new_rows,
        all_purchases=all_rows,
        one_purchase=once_rows,
        exposure=exposure_sweep(fitted, tasks, config.exposure_quantiles, config.k),
        train_seconds=factors.train_seconds,
        content_seconds=content_seconds,
        seconds=time.perf_counter() - started,
    )


def read_articles(data_dir: Path) -> pd.DataFrame:
    """articles.csv as text (article_id keeps its leading zero)."""
    return pd.read_csv(data_dir / ARTICLES_FILE, dtype=str, keep_default_na=False)


def run_cold_start(
    data_dir: Path,
    spark: SparkSession,
    config: ColdStartConfig | None = None,
    trainer: Trainer | None = None,
) -> ColdStartResult:
    """An H&M folder: purchases through the batch's own cleaning (Spark), articles as read."""
    if detect_source(data_dir) != "hm":
        raise ValueError(f"{data_dir}: cold start needs article metadata (an H&M folder)")
    return evaluate_cold_start(
        load_events(data_dir, spark), read_articles(data_dir), config, trainer
    )


# ---------------------------------------------------------------- display


def cold_start_table(result: ColdStartResult) -> Table:
    k = result.split.k
    table = Table(title=f"Cold start (@{k}): content-placed articles against trending")
    for column in ("judged on", "model", "users", f"NDCG@{k}", f"MAP@{k}", f"Recall@{k}",
                   "coverage", "content share"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("judged on", "model") else "right")
    sections = (
        ("new articles bought", result.new_articles),
        ("every test purchase", result.all_purchases),
        ("one-purchase customers", result.one_purchase),
    )
    for title, rows in sections:
        for position, row in enumerate(rows):
            m = row.metrics
            table.add_row(
                title if position == 0 else "",
                row.model,
                f"{m.users:,}",
                f"{m.ndcg:.4f}",
                f"{m.map:.4f}",
                f"{m.recall:.4f}",
                f"{m.coverage:.3f}",
                "-" if row.content_share is None else f"{row.content_share:.1%}",
                end_section=position == len(rows) - 1,
            )
    return table


def exposure_table(result: ColdStartResult) -> Table:
    k = result.split.k
    table = Table(title="Exposure: content vectors rescaled to a quantile of ALS item norms")
    for column in ("content vectors", "median norm", f"new Recall@{k}", f"new NDCG@{k}",
                   f"all NDCG@{k}", f"all Recall@{k}", "content share"):  # fmt: skip
        table.add_column(column, justify="left" if column == "content vectors" else "right")
    for p in result.exposure:
        table.add_row(
            "as fitted" if p.quantile is None else f"norm quantile {p.quantile:g}",
            f"{p.median_norm:.3f}",
            f"{p.new_recall:.4f}",
            f"{p.new_ndcg:.4f}",
            f"{p.all_ndcg:.4f}",
            f"{p.all_recall:.4f}",
            f"{p.content_share:.1%}",
        )
    return table


def print_cold_start(result: ColdStartResult, console: Console) -> None:
    s, d, c = result.split, result.data, result.content
    console.print(f"{d.users:,} customers, {d.items:,} articles bought, {d.events:,} purchases")
    console.print(f"Split: {s.description}")
    console.print(
        f"test from {s.cutoff}: {s.train_events:,} train and {s.test_events:,} test purchases; "
        f"{s.new_articles:,} new articles ({s.new_article_test_events:,} test purchases); "
        f"catalogue {s.catalogue:,} = {s.als_items:,} ALS + {s.content_placed:,} content-placed; "
        f"{s.one_purchase_customers:,} customers with one train purchase"
    )
    fit = (
        f"held-out R^2 {c.validation_r2:.3f}, cosine {c.validation_cosine:.3f} "
        f"on {c.validation_items:,} articles"
        if c.validation_r2 is not None and c.validation_cosine is not None
        else "too few articles for a held-out fit"
    )
    console.print(
        f"Content map: {c.features:,} features, {c.items:,} articles, penalty {c.penalty:g}; " + fit
    )
    console.print(cold_start_table(result))
    console.print(exposure_table(result))
    console.print(
        f"ALS {result.train_seconds:.1f} s, content map {result.content_seconds:.1f} s, "
        f"total {result.seconds:.1f} s"
    )
