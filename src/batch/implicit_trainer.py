"""implicit's ALS behind the trainer role (recsys.trainer), and the sparse matrix it fits:
built in memory, or streamed from the batch's stored table without holding its rows."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from batch.frequency_regularisation import Solver, scaled_solver
from recsys.trainer import Factors, Progress, TrainingData

# Factors.params: the alpha the fit applied to the raw weights.
FITTED_ALPHA = "fitted_alpha"


@dataclass(frozen=True)
class InteractionMatrix:
    """Dense indexes exist only here, inside training."""

    matrix: sp.csr_matrix
    user_ids: npt.NDArray[np.object_]
    item_ids: npt.NDArray[np.object_]


def _sorted_uniques(
    batches: Iterable[pa.RecordBatch], columns: tuple[str, ...]
) -> dict[str, pa.Array]:
    """The distinct values of each column over all batches, sorted, in one pass (memory:
    the distinct values, not the rows)."""
    seen: dict[str, list[pa.Array]] = {c: [] for c in columns}
    pending = dict.fromkeys(columns, 0)
    for batch in batches:
        for column in columns:
            part = pc.unique(batch.column(column))
            seen[column].append(part)
            pending[column] += len(part)
            if pending[column] > 4_000_000:  # fold the partial sets as they grow
                seen[column] = [pc.unique(pa.concat_arrays(seen[column]))]
                pending[column] = len(seen[column][0])
    out: dict[str, pa.Array] = {}
    for column, parts in seen.items():
        distinct = pc.unique(pa.concat_arrays(parts)) if parts else pa.array([], pa.string())
        out[column] = distinct.take(pc.sort_indices(distinct))
    return out


def matrix_from_batches(batches: Callable[[], Iterable[pa.RecordBatch]]) -> InteractionMatrix:
    """The sparse matrix of interactions streamed as Arrow batches, read twice: once for
    the sorted ids, once for the cells. Peak memory is the matrix and the ids, never the
    rows as Python objects (27M interactions of the H&M shape: 4.5 GiB with the fit)."""
    ids = _sorted_uniques(batches(), ("customer_id", "article_id"))
    users, items = ids["customer_id"], ids["article_id"]
    rows: list[npt.NDArray[np.int32]] = []
    cols: list[npt.NDArray[np.int32]] = []
    weights: list[npt.NDArray[np.float32]] = []
    for batch in batches():
        # index_in hashes the value set once per call: ~0.1 s per 1.4M ids, per batch.
        rows.append(_codes(batch.column("customer_id"), users))
        cols.append(_codes(batch.column("article_id"), items))
        weight = pc.cast(batch.column("weight"), pa.float32())
        weights.append(weight.to_numpy(zero_copy_only=False))
    shape = (len(users), len(items))
    if rows:
        matrix = sp.csr_matrix(
            (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=shape
        )
    else:
        matrix = sp.csr_matrix(shape, dtype=np.float32)
    return InteractionMatrix(
        matrix=matrix,
        user_ids=np.asarray(users.to_pylist(), dtype=object),
        item_ids=np.asarray(items.to_pylist(), dtype=object),
    )


def _codes(values: pa.Array, sorted_ids: pa.Array) -> npt.NDArray[np.int32]:
    codes = pc.index_in(values, value_set=sorted_ids)
    out: npt.NDArray[np.int32] = codes.to_numpy(zero_copy_only=False).astype(np.int32)
    return out


def to_matrix(interactions: pd.DataFrame) -> InteractionMatrix:
    users = pd.Categorical(interactions["customer_id"])
    items = pd.Categorical(interactions["article_id"])
    matrix = sp.csr_matrix(
        (
            interactions["weight"].to_numpy(dtype=np.float32),
            (users.codes.astype(np.int64), items.codes.astype(np.int64)),
        ),
        shape=(len(users.categories), len(items.categories)),
    )
    return InteractionMatrix(
        matrix=matrix,
        user_ids=np.asarray(users.categories, dtype=object),
        item_ids=np.asarray(items.categories, dtype=object),
    )


def per_mean_weight(alpha: float, weights: sp.spmatrix) -> float:
    """alpha per unit of the mean interaction weight: the weights' scale (how much the
    decay took off, how many days a pair holds) moves with the half-life and the data's
    span, and would otherwise move alpha's optimum with them (validation, whose part
    ends earlier, and the full fit disagreed on it)."""
    mean = float(weights.data.mean()) if weights.nnz else 0.0
    return alpha / mean if mean > 0 else alpha


class ImplicitTrainer:
    """`implicit`'s conjugate-gradient ALS on one node; confidence is alpha * weight /
    the mean weight (per_mean_weight)."""

    name = "implicit"

    def __init__(
        self,
        *,
        factors: int,
        iterations: int,
        regularization: float,
        alpha: float,
        seed: int,
        regularization_exponent: float = 0.0,
        alpha_per_mean_weight: bool = True,
    ) -> None:
        """alpha_per_mean_weight=False: alpha applies to the raw weights, as the library
        itself does (the evaluation's baseline of its defaults)."""
        self.alpha_per_mean_weight = alpha_per_mean_weight
        self.params: dict[str, Any] = {
            "factors": factors,
            "iterations": iterations,
            "regularization": regularization,
            "alpha": alpha,
            "seed": seed,
        }
        # Each row regularised by regularization * its count ** this (batch.frequency_
        # regularisation); recorded only when used, so older manifests read the same.
        if regularization_exponent:
            self.params["regularization_exponent"] = regularization_exponent

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ImplicitTrainer:
        """One point of a search grid (factors, regularization, alpha; iterations 15 and
        seed 0 unless given)."""
        return cls(
            factors=int(params["factors"]),
            iterations=int(params.get("iterations", 15)),
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
            seed=int(params.get("seed", 0)),
            regularization_exponent=float(params.get("regularization_exponent", 0.0)),
        )

    def fit(self, interactions: TrainingData, progress: Progress | None = None) -> Factors:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        data = (
            to_matrix(interactions)
            if isinstance(interactions, pd.DataFrame)
            else matrix_from_batches(interactions.batches)
        )
        total = int(self.params["iterations"])

        def on_iteration(iteration: int, _elapsed: float, _loss: float) -> None:
            if progress is not None:
                progress(iteration + 1, total)

        exponent = float(self.params.get("regularization_exponent", 0.0))
        alpha = float(self.params["alpha"])
        if self.alpha_per_mean_weight:
            alpha = per_mean_weight(alpha, data.matrix)
        started = time.perf_counter()
        # implicit parallelises itself; a multi-threaded BLAS underneath only contends
        # (the model checks that when it is built, so the limit is set before).
        with threadpool_limits(1, "blas"):
            model = (_frequency_regularised() if exponent else AlternatingLeastSquares)(
                factors=self.params["factors"],
                regularization=self.params["regularization"],
                alpha=alpha,
                iterations=total,
                random_state=self.params["seed"],
            )
            if exponent:
                model.regularization_exponent = exponent
            model.fit(data.matrix, show_progress=False, callback=on_iteration)
        return Factors(
            user_ids=data.user_ids,
            item_ids=data.item_ids,
            user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
            item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
            # What fold-in needs to weigh one more purchase as the fit did.
            params={"trainer": self.name, **self.params, FITTED_ALPHA: alpha},
            train_seconds=time.perf_counter() - started,
        )


@functools.cache
def _frequency_regularised() -> type:
    """Defined on first use: implicit is imported only by a fit."""
    from implicit.cpu.als import AlternatingLeastSquares

    class FrequencyRegularised(AlternatingLeastSquares):  # type: ignore[misc]
        """implicit's ALS with each row regularised by reg * count ** exponent."""

        regularization_exponent = 0.0

        @property
        def solver(self) -> Solver:
            return scaled_solver(super().solver, self.regularization_exponent)

    return FrequencyRegularised
