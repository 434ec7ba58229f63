"""Which variant a customer gets: a keyed hash of the experiment and the customer, so every
process, restart and machine agrees without storing anything."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recsys.experiments.definitions import BUCKETS, Experiment, Experiments, Variant

# Separates the hashed parts, so ("ab", "c") and ("a", "bc") never hash alike; names and
# ids cannot contain it.
_SEP = b"\x1f"


@dataclass(frozen=True)
class Assignment:
    experiment: Experiment
    variant: Variant


def bucket(experiment: Experiment, customer_id: str) -> int:
    """The customer's bucket in [0, BUCKETS) for this experiment: blake2b of the
    experiment's name and salt and the customer id (never Python's per-process hash())."""
    key = _SEP.join((experiment.name.encode(), experiment.salt.encode(), customer_id.encode()))
    digest = hashlib.blake2b(key, digest_size=8, person=b"recsys-ab").digest()
    # 2^64 is not a multiple of 10,000: the first buckets are likelier by 1 part in 10^15.
    return int.from_bytes(digest, "big") % BUCKETS


def assign(experiment: Experiment, customer_id: str) -> Variant:
    """The variant whose cumulative share covers the customer's bucket: with shares 0.5 and
    0.5, buckets 0-4999 get the first variant and 5000-9999 the second."""
    at = bucket(experiment, customer_id)
    covered = 0.0
    for variant in experiment.variants[:-1]:
        covered += variant.share
        # Rounded to whole buckets, so a share of 0.3 is exactly 3,000 of them.
        if at < round(covered * BUCKETS):
            return variant
    return experiment.variants[-1]  # the shares sum to 1: the last covers the rest


def assign_active(experiments: Experiments, customer_id: str) -> Assignment | None:
    """The enabled experiment and the customer's variant in it; None when none is enabled."""
    active = experiments.active
    if active is None:
        return None
    return Assignment(active, assign(active, customer_id))
