"""The temporal split (each user's last events held out), the ranking task built from
it (train interactions, the judged users and their held-out items in dense indexes) and
the validation split carved the same way from train."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from recsys.interaction_weights import build_interactions
from recsys.ranking.report import Report

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SplitConfig:
    """How events are split and judged; a runner's config extends it with its own knobs."""

    k: int = 10
    test_fraction: float = 0.2
    min_user_events: int = 5
    max_test_users: int | None = None  # a seeded sample keeps huge data sets tractable
    interaction_half_life_days: float | None = None  # as RECSYS_INTERACTION_HALF_LIFE_DAYS
    seed: int = 0

    def describe_split(self) -> str:
        return (
            f"per-user temporal, last {self.test_fraction:.0%} of each user's events are test "
            f"(users with fewer than {self.min_user_events} events stay in train); all items "
            "not in the user's train set ranked; hyperparameters chosen on a validation split "
            "carved the same way from train; interaction weights "
            + (
                f"decay by half every {self.interaction_half_life_days:g} days"
                if self.interaction_half_life_days
                else "do not decay"
            )
        )


ConfigT = TypeVar("ConfigT", bound=SplitConfig)


class SplitSummary(Report):
    description: str
    k: int
    users: int
    test_users: int
    items: int
    train_events: int
    test_events: int
    train_interactions: int
    test_events_unknown_item: int  # item absent from train: a miss that stays in the denominator
    test_pairs_seen_in_train: int  # held-out item the user already had: masked, so a miss
    validation_train_events: int
    validation_test_events: int
    validation_test_users: int


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def temporal_split(events: pd.DataFrame, test_fraction: float, min_user_events: int) -> Split:
    """Each user's last `test_fraction` of events (at least one) are test; ties keep file order.

    Both halves come out sorted by user, then time, then original order.
    """
    ordered = events.assign(_order=np.arange(len(events))).sort_values(
        ["customer_id", "ts", "_order"], kind="stable"
    )
    by_user = ordered.groupby("customer_id", sort=False)
    position = by_user.cumcount().to_numpy()
    size = by_user["ts"].transform("size").to_numpy()
    n_test = np.maximum(1, np.floor(size * test_fraction + 0.5)).astype(np.int64)
    is_test = (size >= min_user_events) & (position >= size - n_test)
    ordered = ordered.drop(columns="_order")
    return Split(
        train=ordered[~is_test].reset_index(drop=True),
        test=ordered[is_test].reset_index(drop=True),
    )


def to_interactions(events: pd.DataFrame, half_life_days: float | None = None) -> pd.DataFrame:
    """One row per (user, item); weight = distinct events (timestamps), time-decayed when
    half_life_days is set, exactly as the batch builds them."""
    interactions = build_interactions(events.rename(columns={"ts": "t_dat"}), half_life_days)
    return interactions[["customer_id", "article_id", "weight"]].reset_index(drop=True)


@dataclass(frozen=True)
class RankingTask:
    """Train interactions for the trainers and, in dense indexes, what the model is judged on."""

    interactions: pd.DataFrame
    user_ids: npt.NDArray[np.object_]  # every user with train events, sorted
    item_ids: npt.NDArray[np.object_]  # the catalogue: every train item, sorted
    seen: sp.csr_matrix  # user x item: train interactions, masked when ranking
    test_users: IntArray  # rows of user_ids that are judged
    relevant: sp.csr_matrix  # test user x item: held-out items that are in the catalogue
    n_relevant: IntArray  # distinct held-out items per test user, unknown ones included
    replay_users: IntArray  # one per held-out event, grouped by user, time order inside
    replay_items: IntArray  # the event's item; -1 when not in the catalogue
    test_events_unknown_item: int
    test_pairs_seen_in_train: int
    train_events: pd.DataFrame | None = None  # what the interactions were built from

    def with_half_life(self, half_life_days: float | None) -> RankingTask:
        """The task with its train interactions decayed by another half-life (0 or None:
        none); the same pairs, so ids, masks and what is judged stay as they are."""
        if self.train_events is None:
            raise ValueError("this task holds no train events to weigh again")
        return replace(self, interactions=to_interactions(self.train_events, half_life_days))


def binary_csr(rows: IntArray, cols: IntArray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _pick_users(candidates: IntArray, config: SplitConfig) -> IntArray:
    if config.max_test_users is None or len(candidates) <= config.max_test_users:
        return candidates
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(candidates, size=config.max_test_users, replace=False))


def build_task(split: Split, config: SplitConfig) -> RankingTask:
    interactions = to_interactions(split.train, config.interaction_half_life_days)
    users = pd.Index(np.sort(interactions["customer_id"].unique()))
    items = pd.Index(np.sort(interactions["article_id"].unique()))
    seen = binary_csr(
        users.get_indexer(interactions["customer_id"]).astype(np.int64),
        items.get_indexer(interactions["article_id"]).astype(np.int64),
        (len(users), len(items)),
    )
    event_users = users.get_indexer(split.test["customer_id"]).astype(np.int64)
    test_users = _pick_users(np.unique(event_users[event_users >= 0]), config)
    keep = np.isin(event_users, test_users)
    event_users = event_users[keep]
    event_items = items.get_indexer(split.test["article_id"][keep]).astype(np.int64)
    rows = np.searchsorted(test_users, event_users)
    pairs = pd.DataFrame({"row": rows, "item": split.test["article_id"][keep].to_numpy()})
    n_relevant = pairs.drop_duplicates().groupby("row").size()
    known = event_items >= 0
    # Stable, so each user's events keep their time order from the split.
    grouped = np.argsort(event_users, kind="stable")
    return RankingTask(
        interactions=interactions,
        user_ids=np.asarray(users, dtype=object),
        item_ids=np.asarray(items, dtype=object),
        seen=seen,
        test_users=test_users,
        relevant=binary_csr(rows[known], event_items[known], (len(test_users), len(items))),
        n_relevant=np.asarray(
            n_relevant.reindex(range(len(test_users)), fill_value=0), dtype=np.int64
        ),
        replay_users=event_users[grouped],
        replay_items=event_items[grouped],
        test_events_unknown_item=int((~known).sum()),
        test_pairs_seen_in_train=pairs_seen(seen, event_users[known], event_items[known]),
        train_events=split.train,
    )


def pairs_seen(seen: sp.csr_matrix, users: IntArray, items: IntArray) -> int:
    """Distinct (user, item) pairs among these that `seen` holds."""
    pairs = np.unique(np.stack([users, items]), axis=1)
    return int(np.asarray(seen[pairs[0], pairs[1]]).sum()) if pairs.size else 0


@dataclass(frozen=True)
class PreparedSplit(Generic[ConfigT]):
    """The test task (train vs test) and the validation task (carved from train only)."""

    test: RankingTask
    validation: RankingTask
    config: ConfigT
    summary: SplitSummary


def prepare_split(events: pd.DataFrame, config: ConfigT) -> PreparedSplit[ConfigT]:
    """Each user's last events are test; the same rule on train carves validation."""
    outer = temporal_split(events, config.test_fraction, config.min_user_events)
    inner = temporal_split(outer.train, config.test_fraction, config.min_user_events)
    return prepare(outer, inner, config, config.describe_split())


def prepare(
    outer: Split, inner: Split, config: ConfigT, description: str
) -> PreparedSplit[ConfigT]:
    """The test task (outer) and the validation task (inner, carved from outer's train)."""
    test, validation = build_task(outer, config), build_task(inner, config)
    summary = SplitSummary(
        description=description,
        k=config.k,
        users=len(test.user_ids),
        test_users=len(test.test_users),
        items=len(test.item_ids),
        train_events=len(outer.train),
        test_events=len(outer.test),
        train_interactions=len(test.interactions),
        test_events_unknown_item=test.test_events_unknown_item,
        test_pairs_seen_in_train=test.test_pairs_seen_in_train,
        validation_train_events=len(inner.train),
        validation_test_events=len(inner.test),
        validation_test_users=len(validation.test_users),
    )
    return PreparedSplit(test=test, validation=validation, config=config, summary=summary)
