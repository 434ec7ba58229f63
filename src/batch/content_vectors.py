"""Content vectors: article metadata mapped into the collaborative (ALS) item space, so an
article nobody has bought yet can be recommended, and has similar items, from day one.

Features: one-hot categorical fields (vocabulary from the articles the map is fitted on;
an unseen value adds nothing) and a hashed bag of words of `detail_desc`. Map: a ridge
regression to the ALS item factors in closed form (docs/cold_start.md).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from batch.trainer import Factors
from recsys.hm_schema import CATEGORICAL_FIELDS, CONTENT_FIELDS, TEXT_FIELD
from recsys.index.base import COLLABORATIVE, CONTENT
from recsys.model_store import read_content_model, write_content_model

Floats = npt.NDArray[np.float64]
Rows: TypeAlias = "pd.DataFrame | Sequence[Mapping[str, Any]]"

# Hashed word buckets: a collision only merges two words' weights, while every bucket
# adds to a solve that is cubic in the feature count.
TEXT_BUCKETS: Final = 1024
_TOKEN: Final = r"[0-9a-z]+"

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
FORMAT: Final = 1

# ---------------------------------------------------------------- features


def as_frame(rows: Rows) -> pd.DataFrame:
    """Article rows (a frame or dicts) with exactly the content columns; missing ones empty."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    return frame.reset_index(drop=True).reindex(columns=list(CONTENT_FIELDS))


def _values(frame: pd.DataFrame, field: str) -> pd.Series:
    return frame[field].fillna("").astype(str).str.strip()


def _text_cells(texts: pd.Series, buckets: int) -> tuple[Floats, Floats, Floats]:
    """(row, bucket, weight) of each distinct hashed word; a row's words have unit norm."""
    tokens = texts.fillna("").astype(str).str.lower().str.findall(_TOKEN).explode().dropna()
    if tokens.empty:
        return np.empty(0), np.empty(0), np.empty(0)
    # crc32, not hash(): Python salts str hashes per process, and a model outlives it.
    bucket_of = {t: zlib.crc32(t.encode()) % buckets for t in pd.unique(tokens)}
    cells = pd.DataFrame(
        {"row": tokens.index.to_numpy(dtype=np.int64), "bucket": tokens.map(bucket_of)}
    ).drop_duplicates()
    per_row = cells.groupby("row")["bucket"].transform("size").to_numpy(dtype=np.float64)
    return (
        cells["row"].to_numpy(dtype=np.float64),
        cells["bucket"].to_numpy(dtype=np.float64),
        1.0 / np.sqrt(per_row),
    )


@dataclass(frozen=True)
class Featurizer:
    """One column per categorical value seen in training, then the hashed word buckets."""

    vocabulary: dict[str, tuple[str, ...]]
    text_buckets: int = TEXT_BUCKETS

    @classmethod
    def fit(cls, rows: Rows, text_buckets: int = TEXT_BUCKETS) -> Featurizer:
        frame = as_frame(rows)
        vocabulary = {
            field: tuple(sorted(set(_values(frame, field)) - {""})) for field in CATEGORICAL_FIELDS
        }
        return cls(vocabulary, text_buckets)

    @property
    def width(self) -> int:
        return sum(len(v) for v in self.vocabulary.values()) + self.text_buckets

    def transform(self, rows: Rows) -> sp.csr_matrix:
        frame = as_frame(rows)
        row_parts: list[Floats] = []
        col_parts: list[Floats] = []
        value_parts: list[Floats] = []
        offset = 0
        for field, values in self.vocabulary.items():
            codes = pd.Categorical(_values(frame, field), categories=list(values)).codes
            seen = np.flatnonzero(codes >= 0)  # an unseen value or an empty one: no feature
            row_parts.append(seen.astype(np.float64))
            col_parts.append(offset + codes[seen].astype(np.float64))
            value_parts.append(np.ones(len(seen)))
            offset += len(values)
        text_rows, buckets, weights = _text_cells(frame[TEXT_FIELD], self.text_buckets)
        row_parts.append(text_rows)
        col_parts.append(offset + buckets)
        value_parts.append(weights)
        return sp.csr_matrix(
            (
                np.concatenate(value_parts),
                (
                    np.concatenate(row_parts).astype(np.int64),
                    np.concatenate(col_parts).astype(np.int64),
                ),
            ),
            shape=(len(frame), self.width),
        )


# ---------------------------------------------------------------- ridge regression


@dataclass(frozen=True)
class LinearMap:
    """targets ≈ features @ weights + intercept."""

    weights: Floats  # features x targets
    intercept: Floats

    def apply(self, features: sp.csr_matrix) -> Floats:
        return np.asarray(features @ self.weights) + self.intercept


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


class PenaltyScore(BaseModel):
    penalty: float
    r2: float
    cosine: float


class ContentFit(BaseModel):
    """How the map was fitted, and how well it predicts factors of articles it did not see."""

    items: int  # articles with metadata and ALS factors: the regression's rows
    features: int
    penalty: float  # relative to the mean eigenvalue of the centred Gram matrix
    validation_items: int  # 0: too few articles to hold some out; the default penalty
    # Of the held-out articles' ALS factors, weighted by their purchases when `weighted`.
    validation_r2: float | None = None
    validation_cosine: float | None = None  # mean cosine of predicted and ALS vectors
    weighted: bool = False
    grid: list[PenaltyScore] = []


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


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class ContentModel:
    """Article rows in, vectors in the ALS item space of one model version out."""

    featurizer: Featurizer
    linear: LinearMap
    fit: ContentFit

    @property
    def dim(self) -> int:
        return int(self.linear.weights.shape[1])

    def predict(self, rows: Rows) -> npt.NDArray[np.float32]:
        """One vector per row (H&M article fields; missing fields count as empty)."""
        return self.linear.apply(self.featurizer.transform(rows)).astype(np.float32)

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        spec = {
            "format": FORMAT,
            "vocabulary": self.featurizer.vocabulary,
            "text_buckets": self.featurizer.text_buckets,
            "fit": self.fit.model_dump(),
        }
        return {
            "weights": self.linear.weights,
            "intercept": self.linear.intercept,
            # A JSON string, so loading needs no pickle.
            "spec": np.array(json.dumps(spec)),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> ContentModel:
        spec = json.loads(str(arrays["spec"]))
        if spec.get("format") != FORMAT:
            raise ValueError(f"content model format {spec.get('format')!r} is not {FORMAT}")
        vocabulary = {field: tuple(values) for field, values in spec["vocabulary"].items()}
        return cls(
            featurizer=Featurizer(vocabulary, int(spec["text_buckets"])),
            linear=LinearMap(
                np.asarray(arrays["weights"], dtype=np.float64),
                np.asarray(arrays["intercept"], dtype=np.float64),
            ),
            fit=ContentFit.model_validate(spec["fit"]),
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


def load_content_model(models_dir: Path, version: str) -> ContentModel | None:
    """The version's content model; None for a version trained without one."""
    arrays = read_content_model(models_dir, version)
    return None if arrays is None else ContentModel.from_arrays(arrays)


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
