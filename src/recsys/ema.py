"""The one online-learning step: move a user vector toward the item just bought (or,
by a share of the rate, viewed, clicked, put in the cart).

Scale: the item vector is first rescaled to the user's norm, so `rate` is the share of
the way toward the item's direction whatever the norms of a given model are. The
updater and the offline replay both call this function, so the rate and the event
weights the replay picks are the ones the updater applies.
"""

from __future__ import annotations

import math

import numpy as np

from recsys.vectors import Vector


def ema_update(
    user: Vector | None, item: Vector, rate: float, default_norm: float, weight: float = 1.0
) -> Vector:
    """Return (1 - a) * user + a * item * |user| / |item| with a = rate * weight.

    `weight` is the event's (a purchase 1, a weaker signal less; 0 leaves the user as
    is). A customer with no vector yet starts at the item's direction with default_norm
    (the model's median user norm), whatever the weight, as long as it is positive: an
    event of weight 0 gives nobody a vector, so callers skip it for such a customer.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    if weight == 0.0:
        if user is None:
            raise ValueError("an event of weight 0 gives no customer a first vector")
        return user.copy()
    # sqrt of a dot product: a third of np.linalg.norm's cost on short vectors (per event).
    item_norm = math.sqrt(float(item @ item))
    if item_norm == 0.0:
        return user.copy() if user is not None else item.copy()
    user_norm = math.sqrt(float(user @ user)) if user is not None else 0.0
    if user is None or user_norm == 0.0:
        return (item * (default_norm / item_norm)).astype(np.float32)
    a = rate * weight
    target = item * (user_norm / item_norm)
    return ((1.0 - a) * user + a * target).astype(np.float32)
