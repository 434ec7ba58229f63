"""The other online update: fold-in, the least-squares user vector of implicit ALS given
the item vectors fixed (what `implicit`'s `recalculate_user` computes), from the
customer's whole history rather than a step toward the last item.

With Y the item vectors of the customer's items, c their confidences (alpha times the
interaction weight) and G = Y_all' Y_all the model's Gram matrix over every item:

    x = (G + reg n^e I + Y' diag(c - 1) Y)^-1 Y' c

where n is the number of the customer's items and e the trainer's regularisation
exponent (0 unless it regularised by counts: batch.frequency_regularisation).

The online form (RECSYS_FOLD_IN_HALF_LIFE_EVENTS, RECSYS_FOLD_IN_STEP) weighs each item's
confidence by its recency in events, 2^(-age/h) (age 0: the event being applied, 1: the
item bought before it, ...), so the last purchases count most, then steps the solved
vector toward the event's item by `recsys.ema.ema_update`; the replay evaluation
(batch.evaluation) chooses h and the step on validation and runs these same functions.

A factors x factors solve per update: ~0.1 ms at 32 factors. NumPy only, so any process
can run it without loading `implicit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsys.ema import ema_update

FloatMatrix = npt.NDArray[np.floating]


def gram(item_factors: FloatMatrix) -> npt.NDArray[np.float64]:
    """Y'Y over every item of the model, in float64 (kept per model version)."""
    items = np.asarray(item_factors, dtype=np.float64)
    product: npt.NDArray[np.float64] = items.T @ items
    return product


def fold_in(
    item_gram: npt.NDArray[np.float64],
    vectors: FloatMatrix,
    confidence: npt.NDArray[np.floating],
    regularization: float,
    regularization_exponent: float = 0.0,
) -> npt.NDArray[np.float32]:
    """The user vector that best fits these items at these confidences (the rows of
    `vectors`), regularised as the trainer regularised a row with that many items; the
    zero vector for no items."""
    factors = item_gram.shape[0]
    if len(vectors) == 0:
        return np.zeros(factors, dtype=np.float32)
    y = np.asarray(vectors, dtype=np.float64)
    c = np.asarray(confidence, dtype=np.float64)
    scaled = regularization * len(y) ** regularization_exponent
    a = item_gram + scaled * np.eye(factors) + (y.T * (c - 1.0)) @ y
    b = y.T @ c
    solved: npt.NDArray[np.float32] = np.linalg.solve(a, b).astype(np.float32)
    return solved


def event_ages(times: npt.ArrayLike, newest: int | None = None) -> npt.NDArray[np.float64]:
    """Each item's age in events from the time of its latest purchase: how many of the
    other items were bought later (items of one time, such as one day's basket, share an
    age). With `newest`, that item (the event being applied) is 0 and every other one
    older by one, whatever the times say."""
    stamps = np.asarray(times, dtype=np.float64)
    later = len(stamps) - np.searchsorted(np.sort(stamps), stamps, side="right")
    ages = later.astype(np.float64)
    if newest is not None:
        ages += 1.0 - (stamps[newest] > stamps)
        ages[newest] = 0.0
    return ages


@dataclass(frozen=True)
class Recency:
    """The online form of fold-in: confidences weighed by 2^(-age/half_life_events)
    (0: not weighed), then a step of `step` toward the event's item (0: none)."""

    half_life_events: float = 0.0
    step: float = 0.0

    def __post_init__(self) -> None:
        if self.half_life_events < 0 or not 0.0 <= self.step <= 1.0:
            raise ValueError(f"half-life >= 0 and step in [0, 1], got {self}")

    @property
    def name(self) -> str:
        """As the replay names it: "fold-in", "fold-in h8", "fold-in h8 step0.2"."""
        parts = ["fold-in"]
        if self.half_life_events > 0:
            parts.append(f"h{self.half_life_events:g}")
        if self.step > 0:
            parts.append(f"step{self.step:g}")
        return " ".join(parts)

    def weights(self, ages: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """What each item's confidence is multiplied by."""
        if self.half_life_events <= 0:
            return np.ones(len(ages))
        weights: npt.NDArray[np.float64] = np.exp2(-ages / self.half_life_events)
        return weights

    def stepped(
        self,
        solved: npt.NDArray[np.float32],
        item: npt.NDArray[np.float32],
        default_norm: float,
        weight: float = 1.0,
    ) -> npt.NDArray[np.float32]:
        """The solved vector moved toward the event's item (at `weight`: a weaker signal
        steps by its share), as the EMA moves a vector."""
        if self.step <= 0 or weight <= 0:
            return solved
        return ema_update(solved, item, self.step, default_norm, weight)


# The model meta fields (recsys.keys.model_meta) a version trained by implicit carries,
# so the updater can fold in (RECSYS_ONLINE_UPDATE=fold_in).
GRAM_FIELD = "item_gram"
REGULARIZATION_FIELD = "fold_in_regularization"
ALPHA_FIELD = "fold_in_alpha"
EXPONENT_FIELD = "fold_in_regularization_exponent"
HALF_LIFE_FIELD = "fold_in_half_life_days"
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class FoldInModel:
    """What a version needs to fold in: its Gram matrix, the trainer's regularisation
    and alpha, and the decay its interactions were weighted by."""

    item_gram: npt.NDArray[np.float64]
    regularization: float
    alpha: float
    half_life_days: float
    regularization_exponent: float = 0.0

    def meta(self) -> dict[str, float | str]:
        """As model meta fields (the Gram matrix as hex of float64 bytes)."""
        return {
            GRAM_FIELD: self.item_gram.astype("<f8").tobytes().hex(),
            REGULARIZATION_FIELD: self.regularization,
            ALPHA_FIELD: self.alpha,
            HALF_LIFE_FIELD: self.half_life_days,
            EXPONENT_FIELD: self.regularization_exponent,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> FoldInModel | None:
        """None when the version carries no fold-in fields (not trained by implicit)."""
        if GRAM_FIELD not in meta:
            return None
        flat = np.frombuffer(bytes.fromhex(meta[GRAM_FIELD]), dtype="<f8")
        factors = math.isqrt(len(flat))
        return cls(
            item_gram=flat.reshape(factors, factors).astype(np.float64),
            regularization=float(meta[REGULARIZATION_FIELD]),
            alpha=float(meta[ALPHA_FIELD]),
            half_life_days=float(meta[HALF_LIFE_FIELD]),
            regularization_exponent=float(meta.get(EXPONENT_FIELD, 0.0)),
        )

    def user_vector(
        self,
        bought: Mapping[str, float],
        vectors: Mapping[str, npt.NDArray[np.float32]],
        now: float,
        signal: tuple[npt.NDArray[np.float32], float] | None = None,
        *,
        latest: str | None = None,
        recency: Recency | None = None,
        default_norm: float = 1.0,
    ) -> npt.NDArray[np.float32] | None:
        """The vector of a customer who bought these articles (id -> unix time of the
        latest purchase, each weighted 1 decayed to `now`), and, with `signal`, one more
        item at that weight (an event not kept in the history, such as a view); None
        when no item has a vector.

        With `recency`, each item's weight is also decayed by its age in events among the
        items with a vector, newest first (`event_ages`): the event being applied (the
        signal, else the purchase of `latest`) is 0. The step then moves the vector toward
        that item (`default_norm`: the version's, for a vector of norm 0)."""
        known = [a for a in bought if a in vectors]
        rows = [vectors[a] for a in known]
        times = [bought[a] for a in known]
        weights = self._decay(now - np.asarray(times, dtype=np.float64))
        newest = known.index(latest) if signal is None and latest in known else None
        if signal is not None:
            newest = len(rows)
            rows.append(signal[0])
            weights = np.append(weights, signal[1])
            times.append(now)
        if not rows:
            return None
        recency = recency or Recency()
        confidence = self.alpha * weights * recency.weights(event_ages(times, newest))
        solved = fold_in(self.item_gram, np.stack(rows), confidence, self.regularization,
                         self.regularization_exponent)  # fmt: skip
        if newest is None:
            return solved
        return recency.stepped(solved, rows[newest], default_norm, signal[1] if signal else 1.0)

    def _decay(self, age_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Each purchase's weight 1 halved every half_life_days of its age (0: kept)."""
        if self.half_life_days <= 0:
            return np.ones(len(age_s))
        decayed: npt.NDArray[np.float64] = np.exp2(
            -np.maximum(0.0, age_s) / (self.half_life_days * SECONDS_PER_DAY)
        )
        return decayed
