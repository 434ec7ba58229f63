"""The content model's runtime half: article metadata into a vector in one model
version's ALS item space (batch.content_vectors fits it), for the batch's placement of
unbought articles and for every API process placing a new catalogue article. numpy and
pandas only: the API process does not load scipy for it (a sparse matrix is made only
by `Featurizer.transform`, which the fit uses)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel

from recsys.hm_schema import CATEGORICAL_FIELDS, CONTENT_FIELDS, TEXT_FIELD
from recsys.model_store import read_content_model

if TYPE_CHECKING:
    import scipy.sparse as sp

Floats = npt.NDArray[np.float64]
Rows: TypeAlias = "pd.DataFrame | Sequence[Mapping[str, Any]]"

# Hashed word buckets: a collision only merges two words' weights, while every bucket
# adds to a solve that is cubic in the feature count.
TEXT_BUCKETS: Final = 1024
_TOKEN: Final = r"[0-9a-z]+"
FORMAT: Final = 1


# ---------------------------------------------------------------- features


@dataclass(frozen=True)
class Cells:
    """A feature matrix's non-zero cells: row, column and value of each."""

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    values: Floats
    shape: tuple[int, int]


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
        """The feature matrix, sparse (what the fit solves with)."""
        import scipy.sparse as sp

        cells = self.cells(rows)
        return sp.csr_matrix((cells.values, (cells.rows, cells.cols)), shape=cells.shape)

    def cells(self, rows: Rows) -> Cells:
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
        return Cells(
            np.concatenate(row_parts).astype(np.int64),
            np.concatenate(col_parts).astype(np.int64),
            np.concatenate(value_parts),
            (len(frame), self.width),
        )


# ---------------------------------------------------------------- the map


@dataclass(frozen=True)
class LinearMap:
    """targets ≈ features @ weights + intercept."""

    weights: Floats  # features x targets
    intercept: Floats

    def apply(self, features: sp.csr_matrix) -> Floats:
        return np.asarray(features @ self.weights) + self.intercept

    def apply_cells(self, cells: Cells) -> Floats:
        """`apply` on a matrix given by its cells, in numpy alone."""
        out = np.tile(self.intercept, (cells.shape[0], 1))
        np.add.at(out, cells.rows, cells.values[:, None] * self.weights[cells.cols])
        return out


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
        return self.linear.apply_cells(self.featurizer.cells(rows)).astype(np.float32)

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


def load_content_model(models_dir: Path, version: str) -> ContentModel | None:
    """The version's content model; None for a version trained without one."""
    arrays = read_content_model(models_dir, version)
    return None if arrays is None else ContentModel.from_arrays(arrays)
