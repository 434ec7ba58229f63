"""Content vectors: article metadata mapped into the collaborative (ALS) item space, so an
article nobody has bought yet can be recommended, and has similar items, from day one.

Features: one-hot categorical fields (vocabulary from the articles the map is fitted on;
an unseen value adds nothing) and a hashed bag of words of `detail_desc`. Map: a ridge
regression to the ALS item factors in closed form (docs/cold_start.md). This is the fit;
the model it makes, and its loading, are the core's (recsys.content_model), which the
API uses without this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.content_model import (
    ContentFit,
    ContentModel,
    Featurizer,
    Floats,
    LinearMap,
    PenaltyScore,
)
from recsys.index.base import COLLABORATIVE, CONTENT
from recsys.model_store import write_content_model
from recsys.trainer import Factors

# Penalties tried, as multiples of the mean eigenvalue of the centred Gram matrix, so one
# grid suits any number of articles. The held-out error that picks one is weighted by the
# articles' purchases: most articles sell a few times and their factors are mostly noise,
# which an unweighted error answers with a heavy penalty that flattens every prediction
# towards the mean. On the generator the unweighted choice (10: R^2 0.080) ranked new
# articles for their buyers at Recall@10 0.16, the weighted one (1e-5) at 0.23.
PENALTY_GRID: Final = tuple(float(c) for c in np.logspace(-5, 1, 13))
VALIDATION_SHARE: Final = 0.2
# Below this many articles a held-out split says nothing: the default penalty is used.
MIN_VALIDATION_ITEMS: Final = 20
DEFAULT_PENALTY: Final = 0.01

# ---------------------------------------------------------------- ridge regression


def ridge_path(
    features: sp.csr_matrix, targets: Floats, penalties: Sequence[float]
) -> Iterator[LinearMap]:
    """The ridge solution for each penalty (a multiple of the mean eigenvalue of the
    centred Gram matrix); the intercept is not penalised. One eigendecomposition serves
    every penalty."""
    if any(p <= 0 for p in penalties):
        raise ValueError("ridge penalties must be positive")
    n, width = features.shape
    mean_x = np.asarray(features.mean(axis=0)).ravel()
    mean_y = targets.mean(axis=0)
    # Centred moments from the sparse products: centring the matrix itself would densify it.
    gram = (features.T @ features).toarray() - n * np.outer(mean_x, mean_x)
    cross = np.asarray(features.T @ targets) - n * np.outer(mean_x, mean_y)
    eigenvalues, basis = np.linalg.eigh(gram)
    eigenvalues = np.maximum(eigenvalues, 0.0)  # rounding leaves tiny negatives
    scale = max(float(eigenvalues.mean()), np.finfo(np.float64).tiny) if width else 1.0
    projected = basis.T @ cross
    for penalty in penalties:
        weights = basis @ (projected / (eigenvalues + penalty * scale)[:, None])
        yield LinearMap(weights, mean_y - mean_x @ weights)


def fit_ridge(features: sp.csr_matrix, targets: Floats, penalty: float) -> LinearMap:
    return next(ridge_path(features, targets, [penalty]))


def r_squared(
    predicted: Floats, truth: Floats, baseline: Floats, weights: Floats | None = None
) -> float:
    """1 - SSE / SST over every coordinate, SST around `baseline` (the training mean); rows
    weighted by `weights` when given."""
    w = np.ones(len(truth)) if weights is None else weights
    total = float((w[:, None] * (truth - baseline) ** 2).sum())
    error = float((w[:, None] * (truth - predicted) ** 2).sum())
    return 1.0 - error / total if total > 0 else 0.0


def mean_cosine(predicted: Floats, truth: Floats, weights: Floats | None = None) -> float:
    norms = np.linalg.norm(predicted, axis=1) * np.linalg.norm(truth, axis=1)
    dots = (predicted * truth).sum(axis=1)
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    w = np.ones(len(truth)) if weights is None else weights
    return float((w * cosines).sum() / w.sum()) if w.sum() > 0 else 0.0


def choose_penalty(
    features: sp.csr_matrix,
    targets: Floats,
    *,
    seed: int,
    weights: Floats | None = None,
    grid: Sequence[float] = PENALTY_GRID,
    share: float = VALIDATION_SHARE,
) -> ContentFit:
    """Fit on a seeded (1 - share) of the rows for every penalty; keep the best R^2 on the
    rest, its rows weighted by `weights` (the articles' purchases) when given."""
    n = features.shape[0]
    if n < MIN_VALIDATION_ITEMS:
        return ContentFit(
            items=n, features=features.shape[1], penalty=DEFAULT_PENALTY, validation_items=0
        )
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * share))
    val, train = order[:held], order[held:]
    baseline = targets[train].mean(axis=0)
    held_weights = None if weights is None else weights[val]
    scores = []
    for penalty, linear in zip(
        grid, ridge_path(features[train], targets[train], grid), strict=True
    ):
        predicted = linear.apply(features[val])
        scores.append(
            PenaltyScore(
                penalty=penalty,
                r2=r_squared(predicted, targets[val], baseline, held_weights),
                cosine=mean_cosine(predicted, targets[val], held_weights),
            )
        )
    best = max(scores, key=lambda s: s.r2)
    return ContentFit(
        items=n,
        features=features.shape[1],
        penalty=best.penalty,
        validation_items=held,
        validation_r2=best.r2,
        validation_cosine=best.cosine,
        weighted=weights is not None,
        grid=scores,
    )


def _by_article(articles: pd.DataFrame) -> pd.DataFrame:
    """One row per article id (the first wins, as the batch's cleaning keeps it)."""
    ids = articles["article_id"].astype(str)
    return articles.assign(article_id=ids).drop_duplicates("article_id").set_index("article_id")


def fit_content_model(
    articles: pd.DataFrame,
    item_ids: npt.NDArray[np.object_],
    item_factors: npt.NDArray[np.floating[Any]],
    *,
    purchases: pd.Series | None = None,
    seed: int = 0,
) -> ContentModel:
    """Fit the map on the articles that have both a catalogue row and ALS factors;
    purchases (by article id: how often it was bought, or the decayed weight of that)
    weigh the held-out error that picks the penalty."""
    catalogue = _by_article(articles)
    ids = item_ids.astype(str)
    known = np.isin(ids, catalogue.index.to_numpy(dtype=str))
    if not known.any():
        raise ValueError("no article has both a catalogue row and ALS factors")
    rows = catalogue.loc[ids[known]]
    targets = np.asarray(item_factors[known], dtype=np.float64)
    featurizer = Featurizer.fit(rows)
    features = featurizer.transform(rows)
    weights = (
        None
        if purchases is None
        else purchases.reindex(ids[known]).fillna(0.0).to_numpy(dtype=np.float64)
    )
    # One BLAS thread: right after `implicit` trained, its OpenMP workers still spin and a
    # threaded eigh fought them (1,268 features on 2 cores: 4.5 s, 0.7 s on one thread).
    with threadpool_limits(1, "blas"):
        fit = choose_penalty(features, targets, seed=seed, weights=weights)
        linear = fit_ridge(features, targets, fit.penalty)
    return ContentModel(featurizer, linear, fit)


def save_content_model(models_dir: Path, version: str, model: ContentModel) -> None:
    write_content_model(models_dir, version, model.to_arrays())


# ---------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Every catalogue article's vector: the ALS rows first, then those placed by content."""

    factors: Factors
    placed_by: npt.NDArray[np.object_]  # COLLABORATIVE or CONTENT, per item row of factors

    @property
    def content_placed(self) -> int:
        return int((self.placed_by == CONTENT).sum())


def place_by_content(
    factors: Factors, articles: pd.DataFrame, model: ContentModel | None
) -> Placement:
    """Add a content vector for each catalogue article without ALS factors (none without a
    model)."""
    collaborative = np.full(len(factors.item_ids), COLLABORATIVE, dtype=object)
    if model is None:
        return Placement(factors, collaborative)
    catalogue = _by_article(articles)
    unbought = ~catalogue.index.isin(factors.item_ids.astype(str))
    if not unbought.any():
        return Placement(factors, collaborative)
    rows = catalogue[unbought]
    extended = dataclasses.replace(
        factors,
        item_ids=np.concatenate([factors.item_ids, rows.index.to_numpy(dtype=object)]),
        item_factors=np.vstack([factors.item_factors, model.predict(rows)]).astype(np.float32),
    )
    placed_by = np.concatenate([collaborative, np.full(len(rows), CONTENT, dtype=object)])
    return Placement(extended, placed_by)
