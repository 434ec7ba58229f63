"""The Redis key layout, in one place.

Per-customer keys carry the customer id as a hash tag, so one customer's keys share a
cluster slot and the updater's atomic script works on Redis Cluster too.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "rs"
LIVE_VERSION: Final = f"{PREFIX}:model:live"
CANDIDATE_VERSIONS: Final = f"{PREFIX}:model:candidates"
# Versions that were live before the current one, newest first: what rollback returns to.
VERSION_HISTORY: Final = f"{PREFIX}:model:history"


def user_vector(version: str, customer_id: str) -> str:
    return f"{PREFIX}:v:{version}:u:{{{customer_id}}}"


def item_vector(version: str, article_id: str) -> str:
    return f"{PREFIX}:v:{version}:i:{article_id}"


def model_meta(version: str) -> str:
    return f"{PREFIX}:v:{version}:meta"


def applied_event(version: str, customer_id: str, event_id: str) -> str:
    return f"{PREFIX}:v:{version}:ev:{{{customer_id}}}:{event_id}"


def profile(version: str, customer_id: str) -> str:
    """Hash of the customer's purchase counts as this version knows them: purchases,
    first_ts, last_ts (unix seconds); the updater keeps it current."""
    return f"{PREFIX}:v:{version}:p:{{{customer_id}}}"


def history(customer_id: str) -> str:
    """Sorted set of the customer's purchased article ids, scored by purchase time."""
    return f"{PREFIX}:hist:{{{customer_id}}}"


def last_event(customer_id: str) -> str:
    return f"{PREFIX}:last:{{{customer_id}}}"
