"""Whether an article may be recommended: the `available` payload field of the index.

Absent means available (every version the batch wrote before the flag existed); only an
explicit `false` hides an item, inside the index (a `must_not` on a bool payload index)
and in the trending lists held in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

AVAILABLE_FIELD: Final = "available"


def is_unavailable(payload: Mapping[str, Any]) -> bool:
    return payload.get(AVAILABLE_FIELD) is False
