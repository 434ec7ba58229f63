"""The H&M competition's protocol (Kaggle, 2022): train on everything before the last 7
days, then MAP@12 over every customer who buys in those days, as the competition scored
it, so a user with the real data can compare with its public figures. Customers the
model cannot score (new ones included) get the last train week's best sellers, as the
stack serves them. Each model chooses its values on the 7 days before (the same cut on
train), and is reported with the customer's own purchases excluded and allowed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from batch.eval_config import EvalConfig
from batch.model_specs import ModelSpec, fit_chosen
from batch.param_search import Values
from recsys.ranking.metrics import (
    SCORE_CELLS,
    Scorer,
    average_precision_at_k,
    hit_matrix,
    recommend,
    row_chunks,
)
from recsys.ranking.report import Report
from recsys.ranking.split import (
    FloatArray,
    IntArray,
    PreparedSplit,
    RankingTask,
    Split,
    binary_csr,
    prepare,
)

WEEK_DAYS = 7
K = 12


class CompetitionRow(Report):
    name: str
    pipeline: bool
    chosen: Values
    map_excluded: float  # MAP@12, the customer's own purchases never recommended
    map_allowed: float  # MAP@12, they may be (the competition's winners relied on it)
    seconds: float


class CompetitionResult(Report):
    description: str
    test_first: str
    test_last: str
    train_events: int
    test_customers: int  # who buy in the last 7 days: every one is judged
    test_customers_known: int  # with purchases in train
    exclude_purchased: bool  # RECSYS_EXCLUDE_PURCHASED: the API's rule
    rows: list[CompetitionRow]
    seconds: float


def week_split(events: pd.DataFrame, days: int = WEEK_DAYS) -> Split:
    """The last `days` days (by the newest event) are test, everything before is train."""
    cut = events["ts"].max() - pd.Timedelta(days=days)
    ordered = events.sort_values(["customer_id", "ts"], kind="stable")
    is_test = (ordered["ts"] > cut).to_numpy()
    return Split(
        train=ordered[~is_test].reset_index(drop=True),
        test=ordered[is_test].reset_index(drop=True),
    )


def prepare_week_split(events: pd.DataFrame, config: EvalConfig) -> PreparedSplit[EvalConfig]:
    """Test: the last week against all before; validation: the week before against all
    before it. Every customer buying in the week is judged (no sample, no minimum)."""
    outer = week_split(events)
    inner = week_split(outer.train)
    if outer.train.empty or inner.train.empty:
        raise ValueError("the competition protocol needs more than two weeks of events")
    return prepare(outer, inner, config, DESCRIPTION)


DESCRIPTION = (
    f"H&M competition: train before the last {WEEK_DAYS} days; MAP@{K} over every customer "
    f"buying in them (distinct articles bought are relevant, AP over min(bought, {K})); "
    "customers without a vector get the last train week's best sellers; values chosen on "
    f"the {WEEK_DAYS} days before"
)


def best_sellers(split: Split, task: RankingTask, k: int) -> IntArray:
    """The catalogue indexes of the k articles bought most in the last train week."""
    last = week_split(split.train).test
    counts = last["article_id"].value_counts()
    if len(counts) < k:  # a thin week: topped up from all of train
        counts = pd.concat([counts, split.train["article_id"].value_counts() * 1e-9])
        counts = counts.groupby(level=0).sum().sort_values(ascending=False)
    top = pd.Index(task.item_ids).get_indexer(pd.Index(counts.index[:k]))
    return np.asarray(top[top >= 0], dtype=np.int64)


def competition_map(
    model: Scorer,
    task: RankingTask,
    test: pd.DataFrame,
    sellers: IntArray,
    *,
    exclude_purchased: bool,
    k: int = K,
) -> float:
    """MAP@k over every customer in `test` (the week's purchases): the model's top k for
    those it can score, `sellers` for the others."""
    scored = model.has_user[task.test_users]
    empty = sp.csr_matrix(task.seen.shape, dtype=np.float32)
    mask = task.seen if exclude_purchased else empty
    parts: list[FloatArray] = []
    size = max(1, SCORE_CELLS // max(1, len(task.item_ids)))
    for chunk in row_chunks(len(task.test_users), size):
        users = task.test_users[chunk]
        top = recommend(model, mask[users], users, k)
        if not scored[chunk].all():
            fallback = _sellers_for(sellers, mask[users], k)
            top = np.where(scored[chunk][:, None], top, fallback)
        hits = hit_matrix(top, task.relevant[chunk])
        parts.append(average_precision_at_k(hits, task.n_relevant[chunk], k))
    parts.append(_unknown_customers(task, test, sellers, k))
    total = np.concatenate(parts)
    return float(total.mean()) if len(total) else 0.0


def _sellers_for(sellers: IntArray, seen: sp.csr_matrix, k: int) -> IntArray:
    """Per row: the best sellers the row has not bought (all of them when not masked)."""
    out = np.full((seen.shape[0], k), -1, dtype=np.int64)
    for row in range(seen.shape[0]):
        bought = seen.indices[seen.indptr[row] : seen.indptr[row + 1]]
        kept = sellers[~np.isin(sellers, bought)][:k]
        out[row, : len(kept)] = kept
    return out


def _unknown_customers(
    task: RankingTask, test: pd.DataFrame, sellers: IntArray, k: int
) -> FloatArray:
    """AP@k of the best sellers for each customer buying in the week who is new to train."""
    known = pd.Index(task.user_ids)
    new = test[known.get_indexer(pd.Index(test["customer_id"])) < 0]
    if new.empty:
        return np.zeros(0)
    pairs = new[["customer_id", "article_id"]].drop_duplicates()
    customers = pd.Index(pairs["customer_id"].unique())
    rows = customers.get_indexer(pd.Index(pairs["customer_id"])).astype(np.int64)
    items = pd.Index(task.item_ids).get_indexer(pd.Index(pairs["article_id"])).astype(np.int64)
    inside = items >= 0
    relevant = binary_csr(rows[inside], items[inside], (len(customers), len(task.item_ids)))
    top = np.tile(np.pad(sellers[:k], (0, max(0, k - len(sellers))), constant_values=-1),
                  (len(customers), 1))  # fmt: skip
    n_relevant = np.bincount(rows, minlength=len(customers)).astype(np.int64)
    return average_precision_at_k(hit_matrix(top, relevant), n_relevant, k)


def run_competition(
    events: pd.DataFrame,
    specs: Sequence[ModelSpec],
    config: EvalConfig,
    *,
    exclude_purchased: bool = True,
) -> CompetitionResult:
    """Every model, chosen on the week before, judged on the last week both ways."""
    started = time.perf_counter()
    config = replace(config, k=K, max_test_users=None)  # every buyer, judged at 12
    split = prepare_week_split(events, config)
    outer = week_split(events)
    sellers = best_sellers(outer, split.test, K)
    rows = []
    for spec in specs:
        begun = time.perf_counter()
        chosen = fit_chosen(spec, split)
        maps = [
            competition_map(chosen.model, chosen.task, outer.test, sellers, exclude_purchased=e)
            for e in (True, False)
        ]
        rows.append(
            CompetitionRow(
                name=spec.name,
                pipeline=spec.pipeline,
                chosen=chosen.search.chosen,
                map_excluded=maps[0],
                map_allowed=maps[1],
                seconds=time.perf_counter() - begun,
            )
        )
    return CompetitionResult(
        description=DESCRIPTION,
        test_first=str(outer.test["ts"].min()),
        test_last=str(outer.test["ts"].max()),
        train_events=len(outer.train),
        test_customers=int(outer.test["customer_id"].nunique()),
        test_customers_known=len(split.test.test_users),
        exclude_purchased=exclude_purchased,
        rows=rows,
        seconds=time.perf_counter() - started,
    )


def print_competition(result: CompetitionResult, console: Console) -> None:
    console.print(f"Protocol: {result.description}")
    console.print(
        f"test {result.test_first} to {result.test_last}: {result.test_customers:,} customers "
        f"({result.test_customers_known:,} known to train); train {result.train_events:,} "
        "events"
    )
    setting = "excluded" if result.exclude_purchased else "allowed"
    table = Table(
        title=f"MAP@{K} on the last {WEEK_DAYS} days (the API's rule: own purchases {setting})"
    )
    for column in ("model", "own purchases excluded", "own purchases allowed", "s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in result.rows:
        table.add_row(
            f"[bold]{row.name}[/] (pipeline)" if row.pipeline else row.name,
            f"{row.map_excluded:.4f}",
            f"{row.map_allowed:.4f}",
            f"{row.seconds:.1f}",
        )
    console.print(table)
