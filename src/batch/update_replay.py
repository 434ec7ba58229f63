"""The online update's replay: next-event HitRate@k over held-out purchases in time
order, with the vector static, moved by the EMA at each rate, and folded in after each
event in each of fold-in's forms. `recsys evaluate` runs it on its validation and test
splits; the batch on the gate's holdout, to choose the update a version is served with
(batch.online_update)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recsys.ema import ema_update
from recsys.fold_in import Recency, event_ages, fold_in
from recsys.ranking.metrics import AlignedFactors, runs
from recsys.ranking.report import Report
from recsys.ranking.split import BoolArray, IntArray, RankingTask

EMA_SCALE = "u <- (1-a)*u + a*v*|u|/|v| (recsys.ema.ema_update: the item rescaled to the user norm)"


class RateHitRate(Report):
    rate: float
    hit_rate: float


class FoldInHitRate(Report):
    half_life_events: float  # recsys.fold_in.Recency: 0 weighs no item by recency
    step: float  # 0: no step toward the event's item
    hit_rate: float

    @property
    def name(self) -> str:
        return Recency(self.half_life_events, self.step).name


class ReplayResult(Report):
    update: str = EMA_SCALE
    events: int
    users: int
    repeat_events: int  # the item was already the user's: masked, so a miss for every variant
    unknown_item_events: int  # the model has no vector for the item: a miss, u unchanged
    static_hit_rate: float
    ema: list[RateHitRate]
    best_rate: float
    best_hit_rate: float
    fold_in_hit_rate: float | None = None  # recsys.fold_in after each event (implicit only)
    # Every fold-in variant replayed (the plain one above among them), by its recency.
    fold_in: list[FoldInHitRate] = Field(default_factory=list)
    # The update chosen on the validation split's replay ("ema 0.3", "fold-in"), and its
    # hit rate here; None when this replay is the validation's own.
    chosen: str | None = None
    chosen_hit_rate: float | None = None
    lift: float | None  # chosen (else the best update) / static; None when static is 0
    seconds: float

    def variants(self) -> dict[str, float]:
        """Each online update's hit rate by name: "ema <rate>", "fold-in" and fold-in's
        recency forms ("fold-in h8 step0.2": RECSYS_FOLD_IN_HALF_LIFE_EVENTS=8,
        RECSYS_FOLD_IN_STEP=0.2)."""
        rates = {f"ema {e.rate:g}": e.hit_rate for e in self.ema}
        if self.fold_in_hit_rate is not None:
            rates["fold-in"] = self.fold_in_hit_rate
        rates.update((f.name, f.hit_rate) for f in self.fold_in)
        return rates


@dataclass
class _ReplayCounts:
    hits: IntArray  # static first, then one per EMA rate, then one per fold-in variant
    events: int = 0
    repeats: int = 0
    unknown: int = 0


@dataclass(frozen=True)
class FoldIn:
    """What fold-in needs beside the vectors: the trainer's regularisation and alpha, the
    Gram matrix of the item vectors, each user's train weights and when each train item
    was last bought; and the forms of fold-in to replay (the plain one first)."""

    regularization: float
    alpha: float
    item_gram: npt.NDArray[np.float64]
    weights: sp.csr_matrix  # task users x items
    regularization_exponent: float = 0.0
    # Task users x items, as weights: unix seconds of the pair's latest train event
    # (None: all one time, so recency weighs every train item alike).
    latest: sp.csr_matrix | None = None
    variants: tuple[Recency, ...] = (Recency(),)


def latest_times(task: RankingTask) -> sp.csr_matrix:
    """Unix seconds of each train (user, item)'s latest event, at the events' own
    resolution (a day on H&M-schema data, as the batch writes the Redis history)."""
    events = task.train_events
    if events is None:
        raise ValueError("this task holds no train events")
    seconds = events["ts"].to_numpy().astype("datetime64[s]").astype(np.int64)
    pairs = pd.DataFrame(
        {"u": events["customer_id"].to_numpy(), "i": events["article_id"].to_numpy(), "t": seconds}
    )
    latest = pairs.groupby(["u", "i"], sort=False)["t"].max().reset_index()
    rows = pd.Index(task.user_ids).get_indexer(pd.Index(latest["u"]))
    cols = pd.Index(task.item_ids).get_indexer(pd.Index(latest["i"]))
    shape = (len(task.user_ids), len(task.item_ids))
    return sp.csr_matrix((latest["t"].to_numpy(dtype=np.float64), (rows, cols)), shape=shape)


def fold_in_grid(half_lives: Sequence[float], steps: Sequence[float]) -> tuple[Recency, ...]:
    """The plain fold-in, then every (half-life, step) pair of the grid."""
    grid = [Recency(h, s) for h in half_lives for s in steps]
    return (Recency(), *(r for r in dict.fromkeys(grid) if r != Recency()))


def _user_mask(model: AlignedFactors, seen: sp.csr_matrix, user: int) -> BoolArray:
    """Items that cannot be recommended to the user: seen in train or without a vector."""
    mask = ~model.has_item
    mask[seen.indices[seen.indptr[user] : seen.indptr[user + 1]]] = True
    return mask


def _hits_now(
    model: AlignedFactors, vectors: npt.NDArray[np.float32], mask: BoolArray, item: int, k: int
) -> IntArray:
    """1 per vector whose top k (masked) holds the item: fewer than k items score above it."""
    scores = model.items @ vectors.T
    target = scores[item].copy()
    scores[mask] = -np.inf
    hits: IntArray = ((scores > target).sum(axis=0) < k).astype(np.int64)
    return hits


class _History:
    """A user's items, confidences and latest times for fold-in: train's, then each
    replayed purchase (one more unit of weight on its item, and newer than every event
    before it: the live updater's events carry their own times)."""

    def __init__(self, folding: FoldIn, user: int) -> None:
        row = folding.weights[user]
        self.weight = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        self.time = dict.fromkeys(self.weight, 0.0)
        if folding.latest is not None:
            times = folding.latest[user]
            self.time.update(zip(times.indices.tolist(), times.data.tolist(), strict=True))
        self.clock = max(self.time.values(), default=0.0)
        self.newest = -1

    def add(self, item: int) -> None:
        self.weight[item] = self.weight.get(item, 0.0) + 1.0
        self.clock += 1.0
        self.time[item] = self.clock
        self.newest = item

    def vectors(self, model: AlignedFactors, folding: FoldIn) -> list[npt.NDArray[np.float32]]:
        """One vector per variant of folding, as recsys.fold_in.FoldInModel computes it:
        the newest item (the event just replayed) is age 0, and the step goes toward it."""
        items = np.fromiter(self.weight, dtype=np.int64, count=len(self.weight))
        base = folding.alpha * np.fromiter(self.weight.values(), dtype=np.float64)
        times = np.fromiter(self.time.values(), dtype=np.float64, count=len(self.time))
        newest = int(np.flatnonzero(items == self.newest)[0]) if self.newest >= 0 else None
        ages = event_ages(times, newest)
        vectors, solved = model.items[items], {}
        out = []
        for recency in folding.variants:
            half_life = recency.half_life_events
            if half_life not in solved:  # the steps share their half-life's solve
                solved[half_life] = fold_in(folding.item_gram, vectors,
                                            base * recency.weights(ages), folding.regularization,
                                            folding.regularization_exponent)  # fmt: skip
            x = solved[half_life]
            if newest is not None:
                x = recency.stepped(x, vectors[newest], model.default_norm)
            out.append(x)
        return out


def _replay_user(
    model: AlignedFactors,
    task: RankingTask,
    user: int,
    items: IntArray,
    rates: Sequence[float],
    counts: _ReplayCounts,
    k: int,
    folding: FoldIn | None,
) -> None:
    mask = _user_mask(model, task.seen, user)
    n_folded = len(folding.variants) if folding is not None else 0
    n_vectors = 1 + len(rates) + n_folded
    vectors = np.repeat(model.users[user][None, :], n_vectors, axis=0)
    history = _History(folding, user) if folding is not None else None
    for item in items:
        counts.events += 1
        if item < 0 or not model.has_item[item]:
            counts.unknown += 1
            continue
        if mask[item]:
            counts.repeats += 1
        else:
            counts.hits += _hits_now(model, vectors, mask, int(item), k)
        mask[item] = True
        for row, rate in enumerate(rates, start=1):
            vectors[row] = ema_update(vectors[row], model.items[item], rate, model.default_norm)
        if history is not None and folding is not None:
            history.add(int(item))
            vectors[n_vectors - n_folded :] = history.vectors(model, folding)


def replay(
    model: AlignedFactors,
    task: RankingTask,
    rates: Sequence[float],
    k: int,
    folding: FoldIn | None = None,
    chosen: str | None = None,
) -> ReplayResult:
    """Next-event HitRate@k over the held-out events in time order: static, EMA-updated
    at each rate, and (with `folding`) folded in after each event in each of its forms;
    `chosen` names the update chosen on validation, whose lift is reported."""
    started = time.perf_counter()
    judged = model.has_user[task.replay_users]
    users, items = task.replay_users[judged], task.replay_items[judged]
    folded = folding.variants if folding is not None else ()
    counts = _ReplayCounts(hits=np.zeros(1 + len(rates) + len(folded), dtype=np.int64))
    for start, stop in runs(users):
        user = int(users[start])
        _replay_user(model, task, user, items[start:stop], rates, counts, k, folding)
    rate_of = counts.hits / max(1, counts.events)
    ema_rates = rate_of[1 : 1 + len(rates)]
    best = int(np.argmax(ema_rates)) if rates else -1
    static = float(rate_of[0])
    fold_rates = [
        FoldInHitRate(half_life_events=r.half_life_events, step=r.step, hit_rate=float(h))
        for r, h in zip(folded, rate_of[1 + len(rates) :], strict=True)
    ]
    plain = [f.hit_rate for f in fold_rates if f.name == Recency().name]
    result = ReplayResult(
        events=counts.events,
        users=len(np.unique(users)),
        repeat_events=counts.repeats,
        unknown_item_events=counts.unknown,
        static_hit_rate=static,
        ema=[RateHitRate(rate=r, hit_rate=float(h)) for r, h in zip(rates, ema_rates, strict=True)],
        best_rate=float(rates[best]) if rates else 0.0,
        best_hit_rate=float(ema_rates[best]) if rates else static,
        fold_in_hit_rate=plain[0] if plain else None,
        fold_in=fold_rates,
        lift=None,
        seconds=time.perf_counter() - started,
    )
    variants = result.variants()
    chosen_rate = variants[chosen] if chosen is not None else max(variants.values(), default=static)
    return result.model_copy(
        update={
            "chosen": chosen,
            "chosen_hit_rate": chosen_rate if chosen is not None else None,
            "lift": chosen_rate / static if static > 0 else None,
        }
    )


def choose_update(validation: ReplayResult) -> str:
    """The online update with the best hit rate on the validation replay."""
    variants = validation.variants()
    return max(variants, key=lambda name: variants[name])
