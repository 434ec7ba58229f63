"""A customer's vector blended with trending, for customers with few purchases: one or
two purchases say little about a taste, and what sells now says more than they do.

Each side is divided by its best score among the items it may recommend, so a weight
means the same for every customer and every model: 0 is the vector alone, 1 trending
alone. The API blends the union of the two top lists (serve.recommender); the
evaluation blends the whole catalogue (batch.few_purchases). Both call this function."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

# Which trending list a blend takes: every article's, or the product groups the
# customer bought from.
TrendingSource = Literal["overall", "group"]


def blend_scores(personal: FloatArray, trending: FloatArray, weight: float) -> FloatArray:
    """(1 - weight) * personal / its best + weight * trending / its best, along the last
    axis (an item or a row of items per customer). An item at -inf on either side (one
    that may not be recommended) stays at -inf; a side whose best is not positive is
    taken as it is."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"a blend's weight is between 0 and 1, not {weight}")
    masked = np.isneginf(personal) | np.isneginf(trending)
    with np.errstate(invalid="ignore"):
        blended = (1.0 - weight) * _scaled(personal) + weight * _scaled(trending)
    out: FloatArray = np.where(masked, -np.inf, blended)
    return out


def _scaled(scores: FloatArray) -> FloatArray:
    best = np.max(scores, axis=-1, keepdims=True, initial=-np.inf)
    best = np.where(best > 0, best, 1.0)
    scaled: FloatArray = scores / best
    return scaled


def blends(weight: float, max_purchases: int, purchases: int) -> bool:
    """Whether a customer with a vector and this many purchases is served a blend (none
    at all: a vector from views and clicks alone, which says even less)."""
    return weight > 0.0 and purchases <= max_purchases
