"""The models `recsys evaluate` judges: the pipeline (the batch's trainer with the
batch's search), the other ALS trainer, and the baselines; each chooses its values on the
validation task with the one search (batch.param_search) and is refitted on train."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batch.baselines import EASE_MAX_ITEMS, PopularityTrainer, fit_ease, fit_item_knn
from batch.eval_config import EASE_L2, KNN_NEIGHBOURS, EvalConfig
from batch.implicit_trainer import ImplicitTrainer
from batch.param_search import SearchResult, Space, Values, search
from batch.trainer_factory import open_trainer
from batch.tuning import search_space, start_values, with_values
from recsys.ranking.metrics import Scorer, align, evaluate_ranking
from recsys.ranking.split import PreparedSplit, RankingTask
from recsys.settings import Settings
from recsys.trainer import Trainer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


HALF_LIFE = "interaction_half_life_days"


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: a trainer of factors (make_trainer) or any other scorer
    (fit_scorer), built from the values its search chose on the validation task. A
    half-life among the values reweights the task's interactions first."""

    name: str
    space: Space = field(default_factory=dict)
    make_trainer: Callable[[Values], Trainer] | None = None
    fit_scorer: Callable[[Values, RankingTask], Scorer] | None = None
    start: Values | None = None
    pipeline: bool = False  # the stack's own pipeline: compared with the best of the others
    replay: bool = False
    # The trainer's (regularisation, alpha, regularisation exponent) for these values,
    # when fold-in applies to it (implicit's least squares: recsys.fold_in).
    fold_in: Callable[[Values], tuple[float, float, float]] | None = None
    note: str = ""

    def fit(self, values: Values, task: RankingTask) -> Scorer:
        if self.make_trainer is not None:
            return align(self.make_trainer(values).fit(task.interactions), task)
        if self.fit_scorer is None:
            raise ValueError(f"{self.name}: neither a trainer nor a scorer")
        return self.fit_scorer(values, task)


def trainer_spec(
    settings: Settings, spark: SparkSession | None, *, pipeline: bool, half_life: float | None
) -> ModelSpec:
    """The batch's trainer as the batch runs it: its settings, its space (the half-life
    included: fixed when given) and its search."""
    space = search_space(settings)
    if half_life is not None:
        space[HALF_LIFE] = (half_life,)
    return ModelSpec(
        settings.trainer,
        space,
        make_trainer=lambda values: open_trainer(with_values(settings, values), spark),
        start=start_values(settings, space),
        pipeline=pipeline,
        replay=True,
        fold_in=_implicit_fold_in(settings) if settings.trainer == "implicit" else None,
        note="the batch's trainer and search"
        + ("" if pipeline else f" (RECSYS_TRAINER={settings.trainer})"),
    )


def _implicit_fold_in(settings: Settings) -> Callable[[Values], tuple[float, float, float]]:
    def parameters(values: Values) -> tuple[float, float, float]:
        chosen = with_values(settings, values)
        return (
            chosen.implicit_regularization,
            chosen.implicit_alpha,
            chosen.implicit_regularization_exponent,
        )

    return parameters


def default_models(
    settings: Settings,
    spark: SparkSession | None = None,
    *,
    other_trainer: bool = True,
    half_life: float | None = None,
    ease_max_items: int | None = None,
) -> list[ModelSpec]:
    """The pipeline (the settings' trainer, tuned as the batch tunes it), the other ALS
    trainer likewise (Spark's needs the session), and the baselines."""
    models = [trainer_spec(settings, spark, pipeline=True, half_life=half_life)]
    other = "spark" if settings.trainer == "implicit" else "implicit"
    if other_trainer and (spark is not None or other == "implicit"):
        other_settings = settings.model_copy(update={"trainer": other})
        models.append(trainer_spec(other_settings, spark, pipeline=False, half_life=half_life))
    return [*models, *baselines(ease_max_items or EASE_MAX_ITEMS)]


def baselines(ease_max_items: int = EASE_MAX_ITEMS) -> list[ModelSpec]:
    library = ImplicitTrainer(factors=100, iterations=15, regularization=0.01, alpha=1.0, seed=0,
                              alpha_per_mean_weight=False)  # fmt: skip
    return [
        ModelSpec("popularity", make_trainer=lambda _values: PopularityTrainer()),
        ModelSpec(
            "implicit ALS",
            make_trainer=lambda _values: library,
            note="the library's defaults, no decay",
        ),
        ModelSpec(
            "item-kNN",
            {"neighbours": KNN_NEIGHBOURS},
            fit_scorer=lambda values, task: fit_item_knn(task, int(values["neighbours"])),
            note="implicit's BM25 item-item",
        ),
        ModelSpec(
            "EASE",
            {"l2": EASE_L2},
            fit_scorer=lambda values, task: fit_ease(task, values["l2"], ease_max_items),
            note=f"the {ease_max_items:,} most bought items",
        ),
    ]


class Reweighted:
    """A task under each half-life a search tries, built once each."""

    def __init__(self, task: RankingTask) -> None:
        self.task = task
        self.by_half_life: dict[float, RankingTask] = {}

    def __call__(self, values: Values) -> RankingTask:
        if HALF_LIFE not in values:
            return self.task
        half_life = values[HALF_LIFE]
        if half_life not in self.by_half_life:
            self.by_half_life[half_life] = self.task.with_half_life(half_life)
        return self.by_half_life[half_life]


@dataclass(frozen=True)
class Chosen:
    """A model refitted on the split's train with the values its search chose."""

    search: SearchResult
    model: Scorer
    task: RankingTask  # the split's test task, under the chosen half-life if one was
    fit_seconds: float


def fit_chosen(spec: ModelSpec, split: PreparedSplit[EvalConfig]) -> Chosen:
    """Search the spec's space on the validation task (NDCG@k, as the batch does), then
    refit with the choice on the full train."""
    config = split.config
    validation = Reweighted(split.validation)

    def objective(values: Values) -> float:
        task = validation(values)
        return evaluate_ranking(spec.fit(values, task), task, config.k).ndcg

    found = search(
        spec.space,
        objective,
        start=spec.start,
        budget_s=config.search_budget_s,
        max_trials=config.search_max_trials,
        seed=config.seed,
    )
    test = Reweighted(split.test)(found.chosen)
    fitting = time.perf_counter()
    model = spec.fit(found.chosen, test)
    return Chosen(found, model, test, time.perf_counter() - fitting)
