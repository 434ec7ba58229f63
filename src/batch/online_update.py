"""RECSYS_ONLINE_UPDATE=auto: the batch chooses how events move a version's vectors.

The gate's holdout model (fitted on all but each judged customer's last purchases) is
replayed on a seeded sample of the judged customers' held-out purchases in time order, as
`recsys evaluate` replays its validation split (batch.update_replay): next-event
HitRate@k with the vector static, moved by the EMA at each rate, and folded in after each
event in each of fold-in's forms. The best is the version's update, kept in its meta for
the updater (recsys.online_update) and in its manifest with every variant's hit rate.
The full model never sees this replay's outcome as a test: the gate compares NDCG on the
holdout, not the online update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from batch.eval_config import EMA_RATES, FOLD_IN_HALF_LIVES, FOLD_IN_STEPS
from batch.holdout import HeldOut, HoldoutConfig, Judged, sampled_task
from batch.implicit_trainer import FITTED_ALPHA
from batch.update_replay import FoldIn, ReplayResult, fold_in_grid, replay
from recsys.fold_in import FloatMatrix, Recency, gram
from recsys.model_store import OnlineUpdateRecord
from recsys.online_update import OnlineUpdate
from recsys.ranking.metrics import align
from recsys.ranking.split import RankingTask
from recsys.settings import Settings
from recsys.trainer import Factors

# Below this many replayed events the choice is noise: the settings' EMA is kept.
MIN_EVENTS = 100


def choose_online_update(
    held: HeldOut, judged: Judged, settings: Settings, config: HoldoutConfig
) -> tuple[OnlineUpdate | None, OnlineUpdateRecord]:
    """The update with the best next-event HitRate@k on the holdout's replay (None: too
    few events to choose on), and the record of the replay for the manifest."""
    started = time.perf_counter()
    replayed = replay_input(held, judged, settings.online_update_customers, config.seed)
    model = align(judged.factors, replayed.task)
    folding = _folding(judged.factors, replayed, model.items, settings)
    rates = tuple(sorted({*EMA_RATES, settings.ema_rate}))
    result = replay(model, replayed.task, rates, config.k, folding)
    chosen = best_update(result) if result.events >= MIN_EVENTS else None
    record = OnlineUpdateRecord(
        protocol=protocol(config, settings.online_update_customers),
        chosen=chosen.name if chosen is not None else None,
        customers=result.users,
        events=result.events,
        static_hit_rate=result.static_hit_rate,
        hit_rates=result.variants(),
        seconds=time.perf_counter() - started,
    )
    return chosen, record


def protocol(config: HoldoutConfig, customers: int) -> str:
    return (
        f"next-event HitRate@{config.k} over the held-out purchases (in time order) of up "
        f"to {customers:,} customers of the gate's holdout sample, replayed on the "
        "holdout's model; the best of the EMA rates and fold-in's forms"
    )


def best_update(result: ReplayResult) -> OnlineUpdate:
    """The replay's best variant (ties: the first, the EMA's lowest rate first)."""
    candidates = [(OnlineUpdate("ema", e.rate), e.hit_rate) for e in result.ema]
    candidates += [
        (OnlineUpdate("fold_in", recency=Recency(f.half_life_events, f.step)), f.hit_rate)
        for f in result.fold_in
    ]
    if not candidates:
        raise ValueError("the replay tried no update")
    return max(candidates, key=lambda pair: pair[1])[0]


@dataclass(frozen=True)
class ReplayInput:
    task: RankingTask
    weights: sp.csr_matrix  # the task's users x items: the training pairs' weights
    latest: sp.csr_matrix  # the same pairs: unix seconds of their last day


def replay_input(held: HeldOut, judged: Judged, customers: int, seed: int) -> ReplayInput:
    """The replay of a seeded sample of the judged customers who have a vector: their
    training rows masked (with their weights and last days, for fold-in), their held-out
    purchases in the order the split held them out (day, then article)."""
    factors = judged.factors
    judged_ids = pd.Index(np.sort(held.held_out["customer_id"].unique()))
    eligible = judged_ids[judged_ids.isin(factors.user_ids)].to_numpy(dtype=object)
    if len(eligible) > customers:
        eligible = np.random.default_rng(seed).choice(eligible, size=customers, replace=False)
    users = pd.Index(np.sort(eligible))
    mine = held.held_out["customer_id"].isin(users)
    events = held.held_out[mine].sort_values(["customer_id", "t_dat", "article_id"], kind="stable")
    seen = judged.seen[judged.seen["customer_id"].isin(users)]
    # The holdout's own task of these customers (their training items masked), replayed.
    judged_task = sampled_task(seen, events, factors)
    users, items = pd.Index(judged_task.user_ids), pd.Index(judged_task.item_ids)
    task = replace(
        judged_task,
        replay_users=users.get_indexer(pd.Index(events["customer_id"])).astype(np.int64),
        replay_items=items.get_indexer(pd.Index(events["article_id"])).astype(np.int64),
    )
    rows = users.get_indexer(pd.Index(seen["customer_id"]))
    cols = items.get_indexer(pd.Index(seen["article_id"]))
    keep = cols >= 0
    rows, cols, shape = rows[keep], cols[keep], task.seen.shape
    weights = sp.csr_matrix((seen["weight"].to_numpy(np.float64)[keep], (rows, cols)), shape)
    days = pd.to_datetime(seen["last_purchase"].to_numpy()[keep]).to_numpy("datetime64[s]")
    latest = sp.csr_matrix((days.astype(np.int64).astype(np.float64), (rows, cols)), shape)
    return ReplayInput(task, weights, latest)


def _folding(
    factors: Factors, replayed: ReplayInput, item_vectors: FloatMatrix, settings: Settings
) -> FoldIn | None:
    """Fold-in's forms to replay, as the updater folds in (a version trained by implicit
    carries what it needs; Spark MLlib's do not: the EMA only)."""
    params = factors.params
    if params.get("trainer") != "implicit":
        return None
    variants = fold_in_grid(
        sorted({*FOLD_IN_HALF_LIVES, settings.fold_in_half_life_events}),
        sorted({*FOLD_IN_STEPS, settings.fold_in_step}),
    )
    return FoldIn(
        regularization=float(params["regularization"]),
        alpha=float(params.get(FITTED_ALPHA, params["alpha"])),
        item_gram=gram(item_vectors),
        weights=replayed.weights,
        regularization_exponent=float(params.get("regularization_exponent", 0.0)),
        latest=replayed.latest,
        variants=variants,
    )
