"""The Redis key layout, in one place.

Per-customer keys carry the customer id as a hash tag, so one customer's keys share a
cluster slot and the updater's atomic script works on Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

PREFIX: Final = "rs"
# The version pointers share a hash tag: they change together, in one transaction, which
# a cluster runs only on keys of one slot.
LIVE_VERSION: Final = f"{PREFIX}:{{model}}:live"
CANDIDATE_VERSIONS: Final = f"{PREFIX}:{{model}}:candidates"
# Versions that were live before the current one, newest first: what rollback returns to.
VERSION_HISTORY: Final = f"{PREFIX}:{{model}}:history"
# Hash: the erasure record (recsys.erasure), SHA-256 of a customer id -> unix time erased.
ERASED: Final = f"{PREFIX}:erased"


def user_vector(version: str, customer_id: str) -> str:
    return f"{PREFIX}:v:{version}:u:{{{customer_id}}}"


def item_vector(version: str, article_id: str) -> str:
    return f"{PREFIX}:v:{version}:i:{article_id}"


def version_pattern(version: str) -> str:
    """SCAN pattern of every key of one version."""
    return f"{PREFIX}:v:{version}:*"


def model_meta(version: str) -> str:
    return f"{PREFIX}:v:{version}:meta"


def applied_events(version: str, customer_id: str) -> str:
    """String: which of the customer's events this version has applied (recsys.apply):
    a floor, the broker time at or before which all were, and the latest few above it."""
    return f"{PREFIX}:v:{version}:ap:{{{customer_id}}}"


def applied_events_pattern(version: str) -> str:
    """SCAN pattern of one version's applied-event state, every customer."""
    return f"{PREFIX}:v:{version}:ap:*"


def profile(version: str, customer_id: str) -> str:
    """Hash of the customer's purchase counts as this version knows them: purchases,
    first_ts, last_ts (unix seconds); the updater keeps it current."""
    return f"{PREFIX}:v:{version}:p:{{{customer_id}}}"


def history(customer_id: str) -> str:
    """Sorted set of the customer's purchased article ids, scored by purchase time."""
    return f"{PREFIX}:hist:{{{customer_id}}}"


def last_event(customer_id: str) -> str:
    return f"{PREFIX}:last:{{{customer_id}}}"


# --- A/B experiments (recsys.experiments.ledger) -------------------------------------
# Impressions and the purchases credited to them. Per-customer keys share the customer's
# hash tag, so the attribution script reads one slot for them; the per-experiment counters
# are the exception (docs/experiments.md, "Redis").


def experiment_impressions(customer_id: str) -> str:
    """Hash: the customer's recommendation responses in experiments, by recommendation id
    (flag, experiment, variant, time shown, article ids); the latest few in the window."""
    return f"{PREFIX}:xp:rec:{{{customer_id}}}"


def experiment_seen(customer_id: str) -> str:
    """Sorted set of the customer's recommendation ids in experiments, scored by time shown."""
    return f"{PREFIX}:xp:seen:{{{customer_id}}}"


def experiment_attributed(customer_id: str) -> str:
    """Hash: the outcome of attributing each of the customer's latest purchase events, by
    event id (time, then the outcome; empty: credited to none)."""
    return f"{PREFIX}:xp:att:{{{customer_id}}}"


def experiment_counts(experiment: str) -> str:
    """Hash of the experiment's counters: i:<variant> impressions, c:<variant> converted
    impressions, p:<variant> attributed purchases."""
    return f"{PREFIX}:xp:n:{experiment}"


def experiment_counted(experiment: str) -> str:
    """Sorted set of the purchase events the experiment's counters counted, by when: each
    counts once. Tagged with the counters' key name, so both share its slot."""
    return f"{PREFIX}:xp:counted:{{{experiment_counts(experiment)}}}"


def experiment_exposed(experiment: str, variant: str) -> str:
    """HyperLogLog of the customers a variant was shown to."""
    return f"{PREFIX}:xp:u:{experiment}:{variant}"


# --- every key of one customer (recsys.erasure) ---------------------------------------


def customer_keys(customer_id: str, versions: Iterable[str]) -> list[str]:
    """Every key that holds something of the customer, in the given model versions and
    outside them. A key family added above belongs here too (the erasure test scans the
    keyspace for the customer's hash tag after an erasure, every family written)."""
    per_version = [
        key
        for version in versions
        for key in (
            user_vector(version, customer_id),
            profile(version, customer_id),
            applied_events(version, customer_id),
        )
    ]
    return [
        *per_version,
        history(customer_id),
        last_event(customer_id),
        experiment_impressions(customer_id),
        experiment_seen(customer_id),
        experiment_attributed(customer_id),
    ]


# --- metrics (observability.experiment_metrics) --------------------------------------

# String: the API replica that exports the experiments' totals, until its lease expires.
METRICS_EXPORTER: Final = f"{PREFIX}:metrics:exporter"


# --- API rate limits (serve.access) ---------------------------------------------------


def rate_limit(subject: str) -> str:
    """String: one caller's GCRA state (its theoretical arrival time, in microseconds of
    the Redis server's clock); subject is `key:<key name>` or `addr:<client address>`."""
    return f"{PREFIX}:rl:{subject}"
