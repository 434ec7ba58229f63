"""What `recsys evaluate` and its runners measure beyond the split: the EMA rates and
fold-in forms the replay tries, the MMR trade-offs of the diversity sweep, the
weak-signal weights, the baselines' choices and the search's budget."""

from __future__ import annotations

from dataclasses import dataclass

from batch.param_search import MAX_TRIALS
from recsys.ranking.split import SplitConfig

EMA_RATES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)

# Fold-in's recency forms the replay tries beside the plain one (recsys.fold_in.Recency):
# half-lives in events x steps toward the event's item. Each half-life is one more solve
# per replayed event; a step costs a vector more.
FOLD_IN_HALF_LIVES: tuple[float, ...] = (4.0, 8.0, 16.0)
FOLD_IN_STEPS: tuple[float, ...] = (0.0, 0.2)


# Weights of a view, click or add-to-cart (a purchase is 1) the weak-signal replay tries.
SIGNAL_WEIGHTS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)


# The baselines' choices, tried whole on the validation split: item-kNN's neighbours per
# item, EASE's L2 penalty.
KNN_NEIGHBOURS: tuple[float, ...] = (10, 20, 50, 100, 200)
EASE_L2: tuple[float, ...] = (10, 50, 200, 500, 1000, 3000)


# The MMR trade-offs the diversity sweep measures (batch.diversity_eval).
LAMBDAS: tuple[float, ...] = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


@dataclass(frozen=True)
class EvalConfig(SplitConfig):
    ema_rates: tuple[float, ...] = EMA_RATES
    fold_in_half_lives: tuple[float, ...] = FOLD_IN_HALF_LIVES  # (): the plain fold-in only
    fold_in_steps: tuple[float, ...] = FOLD_IN_STEPS
    diversity_lambdas: tuple[float, ...] = LAMBDAS  # MMR trade-offs to measure ((): none)
    diversity_users: int = 1_000  # test users queried through the engine per lambda
    # The weak-signal replay (batch.signal_replay), where the data has weak signals.
    signal_weights: tuple[float, ...] = SIGNAL_WEIGHTS
    signal_ema_rate: float = 0.3  # as RECSYS_EMA_RATE
    signal_min_gain: float = 0.01  # relative NDCG@k over purchases only to turn a type on
    signal_retrain: bool = True  # also train ALS with the weak signals (one fit per weight)
    # Each model's search (batch.param_search), as the batch's RECSYS_TUNING_BUDGET_S
    # (None: 12 times the first trial, 30-360 s) and RECSYS_TUNING_MAX_TRIALS.
    search_budget_s: float | None = None
    search_max_trials: int = MAX_TRIALS
