"""Weaker signals, measured: do views, clicks and add-to-carts, weighed into the EMA (and
into training), make the online-updated user vectors rank a customer's next purchases
better than purchases alone?

The protocol, evaluation.py's per-user temporal split taken one step further:
- purchases: each user's last 20% are test (the outer split), the last 20% of the rest
  are the online window (the inner split, the evaluation's validation split); ALS is
  trained on the purchases before it;
- a user's weak signals from before their first online purchase are training data (used
  by the retrained variants only); those from then until the day before their first
  test purchase are in the online window (days have no time, so the test day's own
  signals are left out); later ones are unused;
- the online window is replayed in time order (on one day, signals before purchases)
  through recsys.ema.ema_update, the updater's own step, at RECSYS_EMA_RATE, each event
  at its type's weight;
- then each test user's vector ranks every catalogue item they have not bought (only
  purchases are masked: weak signals are not history) against their test purchases:
  NDCG@k and Recall@k, as evaluation.evaluate_ranking computes them.

Variants: static (no update), purchases only (every weak weight 0), each type alone at
each weight of `EvalConfig.signal_weights`, and every type at its chosen weight. The
retrained ones also train ALS with the weak signals before the cutoff at the same
weights (batch.interactions' rule), as the next batch run does in production. A type's
chosen weight (`choose`) is judged by its retrained variant's NDCG@k: 0 when no weight
beats purchases only by `EvalConfig.signal_min_gain` (relative), else the smallest
weight within that margin of the best.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from batch.eval_config import EvalConfig
from batch.param_search import Values
from batch.weak_signals import SIGNAL_TYPES
from recsys.ema import ema_update
from recsys.events import EVENT_TYPES, PURCHASE
from recsys.interaction_weights import EVENT_WEIGHT
from recsys.ranking.metrics import AlignedFactors, align, evaluate_ranking, runs
from recsys.ranking.report import Report
from recsys.ranking.split import RankingTask, build_task, temporal_split, to_interactions
from recsys.trainer import Trainer

IntArray = npt.NDArray[np.int64]
Weights = dict[str, float]
PURCHASES_ONLY: Weights = dict.fromkeys(SIGNAL_TYPES, 0.0)
# The types' weights chosen one at a time, tried together at these scales.
COMBINED_SCALES: tuple[float, ...] = (0.25, 0.5, 1.0)


class SignalPoint(Report):
    """One way of using the weak signals: NDCG/Recall@k of the online-updated vectors."""

    variant: str  # static, purchases only, view, click, add_to_cart, all x<scale>
    weights: dict[str, float]  # per event type; a purchase is always 1
    ndcg: float  # ALS trained on purchases, updated online by every event
    recall: float
    retrained_ndcg: float | None = None  # ALS trained with the signals too, then the same
    retrained_recall: float | None = None


class SignalReplayResult(Report):
    model: str
    description: str
    ema_rate: float
    users: int  # test users judged
    online_purchases: int  # purchases replayed in the online window (judged users)
    online_signals: dict[str, int]  # weak signals in the online window, by type
    train_signals: dict[str, int]  # weak signals before the cutoff (retrained variants)
    points: list[SignalPoint]
    chosen: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class _Online:
    """The online window of the judged users, in replay order."""

    users: IntArray  # task user rows, grouped by user
    items: IntArray  # task item columns; -1 for an item not in the catalogue
    types: IntArray  # index in EVENT_TYPES


def signal_replay(
    events: pd.DataFrame,
    signals: pd.DataFrame,
    model_name: str,
    make_trainer: Callable[[Values], Trainer],
    params: Values,
    config: EvalConfig,
) -> SignalReplayResult:
    """`events`: the purchases (evaluation_data's frame); `signals`: weak_signals' frame."""
    started = time.perf_counter()
    outer = temporal_split(events, config.test_fraction, config.min_user_events)
    inner = temporal_split(outer.train, config.test_fraction, config.min_user_events)
    task = build_task(outer, config)
    train_signals, online_signals = _cut(signals, inner.test, outer.test)
    half_life = config.interaction_half_life_days
    base = align(make_trainer(params).fit(to_interactions(inner.train, half_life)), task)
    online = _online_window(task, base, inner.test, online_signals)

    def judge(model: AlignedFactors, weights: Weights) -> tuple[float, float]:
        vectors = _replay(model, online, weights, config.signal_ema_rate)
        metrics = evaluate_ranking(replace(model, users=vectors), task, config.k)
        return metrics.ndcg, metrics.recall

    def retrained(weights: Weights) -> tuple[float, float]:
        frame = _training_events(inner.train, train_signals, weights)
        model = align(make_trainer(params).fit(to_interactions(frame, half_life)), task)
        return judge(model, weights)

    static = evaluate_ranking(base, task, config.k)
    only = judge(base, PURCHASES_ONLY)
    points = [
        SignalPoint(variant="static", weights={}, ndcg=static.ndcg, recall=static.recall),
        _point("purchases only", PURCHASES_ONLY, only, only),
    ]
    for kind in SIGNAL_TYPES:
        for weight in config.signal_weights:
            weights = {**PURCHASES_ONLY, kind: weight}
            again = retrained(weights) if config.signal_retrain else None
            points.append(_point(kind, weights, judge(base, weights), again))
    # Each type was chosen alone; together they add up, so the set is tried scaled down
    # too, and the same rule picks the scale.
    alone = choose(points, only[0], config.signal_min_gain)
    for scale in COMBINED_SCALES:
        weights = {kind: round(weight * scale, 4) for kind, weight in alone.items()}
        again = retrained(weights) if config.signal_retrain and any(weights.values()) else None
        points.append(_point(f"all x{scale:g}", weights, judge(base, weights), again))
    together = [p for p in points if p.variant.startswith("all x")]
    picked = _pick(together, only[0], config.signal_min_gain)
    chosen = picked.weights if picked is not None else dict(PURCHASES_ONLY)
    judged = base.has_user[online.users]
    kinds = online.types[judged]
    return SignalReplayResult(
        model=model_name,
        description=(
            "per user: purchases before the online window train ALS; the window (the last "
            "20% of the train purchases, and the weak signals from its first purchase to "
            "the day before the first test purchase) is replayed through the EMA; the "
            "vectors then rank every unbought item against the test purchases"
        ),
        ema_rate=config.signal_ema_rate,
        users=int(base.has_user[task.test_users].sum()),
        online_purchases=int((kinds == EVENT_TYPES.index(PURCHASE)).sum()),
        online_signals={t: int((kinds == EVENT_TYPES.index(t)).sum()) for t in SIGNAL_TYPES},
        train_signals={t: int((train_signals["event_type"] == t).sum()) for t in SIGNAL_TYPES},
        points=points,
        chosen=chosen,
        seconds=time.perf_counter() - started,
    )


def choose(points: list[SignalPoint], purchases_only: float, min_gain: float) -> Weights:
    """Per type, the weight `_pick` picks among that type's points alone."""
    chosen = dict(PURCHASES_ONLY)
    for kind in SIGNAL_TYPES:
        best = _pick([p for p in points if p.variant == kind], purchases_only, min_gain)
        chosen[kind] = best.weights[kind] if best is not None else 0.0
    return chosen


def _pick(points: list[SignalPoint], purchases_only: float, min_gain: float) -> SignalPoint | None:
    """None when no point beats purchases only by min_gain (relative NDCG@k, retrained
    where measured); else the lightest point within min_gain of the best, since a shop's
    real signals are likely noisier than the generator's."""
    if not points:
        return None
    best = max(_score(p) for p in points)
    if best <= purchases_only * (1.0 + min_gain):
        return None
    lightest = sorted(points, key=lambda p: sum(p.weights.values()))
    return next(p for p in lightest if _score(p) >= best * (1.0 - min_gain))


def _score(point: SignalPoint) -> float:
    return point.retrained_ndcg if point.retrained_ndcg is not None else point.ndcg


def _point(
    variant: str,
    weights: Weights,
    online: tuple[float, float],
    retrained: tuple[float, float] | None,
) -> SignalPoint:
    return SignalPoint(
        variant=variant,
        weights=dict(weights),
        ndcg=online[0],
        recall=online[1],
        retrained_ndcg=retrained[0] if retrained else None,
        retrained_recall=retrained[1] if retrained else None,
    )


def _cut(
    signals: pd.DataFrame, online_purchases: pd.DataFrame, test: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, online window) signals, by each user's first online and test purchase."""
    test_from = test.groupby("customer_id")["ts"].min()
    online_from = online_purchases.groupby("customer_id")["ts"].min().combine_first(test_from)
    ts = signals["ts"]
    starts = signals["customer_id"].map(online_from)
    ends = signals["customer_id"].map(test_from)
    before = starts.isna() | (ts < starts)
    during = ~before & (ts < ends)
    return signals[before].reset_index(drop=True), signals[during].reset_index(drop=True)


def _online_window(
    task: RankingTask,
    model: AlignedFactors,
    purchases: pd.DataFrame,
    signals: pd.DataFrame,
) -> _Online:
    """The judged users' online events: by user, then day; signals before purchases on a
    day (the funnel comes first), then the order of the files."""
    frame = pd.concat(
        [
            signals[["customer_id", "article_id", "ts", "event_type"]],
            purchases[["customer_id", "article_id", "ts"]].assign(event_type=PURCHASE),
        ],
        ignore_index=True,
    )
    users = pd.Index(task.user_ids).get_indexer(pd.Index(frame["customer_id"])).astype(np.int64)
    judged = np.zeros(len(task.user_ids), dtype=bool)
    judged[task.test_users] = True
    keep = (users >= 0) & judged[np.maximum(users, 0)] & model.has_user[np.maximum(users, 0)]
    frame = frame.assign(
        _user=users,
        _purchase=(frame["event_type"] == PURCHASE).astype(np.int8),
        _order=np.arange(len(frame)),
    )[keep]
    frame = frame.sort_values(["_user", "ts", "_purchase", "_order"], kind="stable")
    return _Online(
        users=frame["_user"].to_numpy(dtype=np.int64),
        items=pd.Index(task.item_ids).get_indexer(pd.Index(frame["article_id"])).astype(np.int64),
        types=pd.Index(EVENT_TYPES).get_indexer(pd.Index(frame["event_type"])).astype(np.int64),
    )


def _replay(
    model: AlignedFactors, online: _Online, weights: Mapping[str, float], rate: float
) -> npt.NDArray[np.float32]:
    """Every judged user's vector after their online window, each event through the
    updater's EMA at its type's weight (weight 0: skipped, as the updater leaves it)."""
    by_type = np.array([1.0 if t == PURCHASE else weights[t] for t in EVENT_TYPES])
    vectors = model.users.copy()
    for start, stop in runs(online.users):
        user = int(online.users[start])
        vector = model.users[user]
        for item, kind in zip(online.items[start:stop], online.types[start:stop], strict=True):
            weight = float(by_type[kind])
            if item < 0 or not model.has_item[item] or weight == 0.0:
                continue
            vector = ema_update(vector, model.items[item], rate, model.default_norm, weight)
        vectors[user] = vector
    return vectors


def _training_events(
    purchases: pd.DataFrame, signals: pd.DataFrame, weights: Mapping[str, float]
) -> pd.DataFrame:
    """Purchases at weight 1 and the signals at their type's weight, for to_interactions."""
    weak = signals.assign(**{EVENT_WEIGHT: signals["event_type"].map(weights).astype(float)})
    return pd.concat(
        [
            purchases[["customer_id", "article_id", "ts"]].assign(**{EVENT_WEIGHT: 1.0}),
            weak[["customer_id", "article_id", "ts", EVENT_WEIGHT]],
        ],
        ignore_index=True,
    )
