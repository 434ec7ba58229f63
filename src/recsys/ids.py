"""External ids as they travel through the API, the events and the stores."""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Annotated, Final

from pydantic import StringConstraints

# Real H&M ids are 64 hex chars (customers) and 10 digits (articles); other shops bring
# their own, so any short id of safe characters is accepted.
_ID_CHARS: Final = r"[A-Za-z0-9._:-]+"
ID_PATTERN: Final = rf"^{_ID_CHARS}$"
# The same for Spark's rlike (Java regex), where `$` also matches before a final newline.
SPARK_ID_PATTERN: Final = rf"\A{_ID_CHARS}\z"
MAX_ID_LENGTH: Final = 128
_ID_RE: Final = re.compile(_ID_CHARS)

ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
]

# Point ids in the item index are derived from the article id, so every model version
# and every backend agree on them without a lookup table. They are integers (a 63-bit
# hash), not UUIDs: Qdrant checks an integer id in an exclusion filter at no measurable
# cost, where 20 UUID ids added 70 µs to a 200 µs query and 100 added 300 µs. Writing an
# index fails on a collision (~1 in 10^9 for a million articles), so none goes unseen.
_POINT_ID_BITS: Final = 63


def is_valid_id(value: str) -> bool:
    # fullmatch: a `$` would let a trailing newline through.
    return 0 < len(value) <= MAX_ID_LENGTH and _ID_RE.fullmatch(value) is not None


@functools.lru_cache(maxsize=1 << 18)
def item_point_id(article_id: str) -> int:
    digest = hashlib.blake2b(article_id.encode(), digest_size=8, person=b"recsys-item").digest()
    return int.from_bytes(digest, "big") >> (64 - _POINT_ID_BITS)
