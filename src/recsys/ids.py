"""External ids as they travel through the API, the events and the stores."""

from __future__ import annotations

import functools
import re
import uuid
from typing import Annotated, Final

from pydantic import StringConstraints

# Real H&M ids are 64 hex chars (customers) and 10 digits (articles); other shops bring
# their own, so any short id of safe characters is accepted.
ID_PATTERN: Final = r"^[A-Za-z0-9._:-]+$"
MAX_ID_LENGTH: Final = 128
_ID_RE: Final = re.compile(ID_PATTERN)

ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
]

# Point ids in the item index are derived from the article id, so every model version
# and every backend agree on them without a lookup table.
_ITEM_NAMESPACE: Final = uuid.UUID("6f1c1c58-8a0e-4a53-9a55-3a1f1f2b9d10")


def is_valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and _ID_RE.match(value) is not None


@functools.lru_cache(maxsize=1 << 18)
def item_point_id(article_id: str) -> str:
    return str(uuid.uuid5(_ITEM_NAMESPACE, article_id))
