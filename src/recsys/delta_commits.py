"""A Delta commit that lost a race with another writer (the archiver's merge, an
erasure's delete, a compaction) is tried again, a few times, with a growing pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from deltalake.exceptions import CommitFailedError

T = TypeVar("T")
COMMIT_RETRIES = 5


def with_commit_retries(action: Callable[[], T], retries: int = COMMIT_RETRIES) -> T:
    for attempt in range(retries):
        try:
            return action()
        except CommitFailedError:
            if attempt == retries - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")
