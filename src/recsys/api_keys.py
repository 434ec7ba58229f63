"""API keys: what a configured key is (name, role, SHA-256 of the key), and how one is made.

Only the hash is configured and held. A key is 256 random bits, so its SHA-256 cannot be
reversed by guessing; a slow password hash (bcrypt, argon2) protects low-entropy secrets
and would add milliseconds to every request for nothing here (docs/security.md).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

# events: post events. read: read customers' data (profiles, explanations, the page's
# customer list). admin: promote and roll back models, upsert the catalogue, run
# experiments, erase customers, and post events and read customers' data too.
Role = Literal["events", "read", "admin"]
ROLES: Final[tuple[Role, ...]] = ("events", "read", "admin")
# What a key of each role may do besides the public reads (which any key may make).
GRANTS: Final[dict[Role, frozenset[Role]]] = {
    "events": frozenset({"events"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"events", "read", "admin"}),
}
# A prefix makes a leaked key easy to recognise (secret scanners, log reviews).
KEY_PREFIX: Final = "rsk_"
KEY_BYTES: Final = 32


class ApiKey(BaseModel):
    """One configured key: `{"name": ..., "role": ..., "sha256": ...}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Who holds it (metrics, rate-limit buckets); not a secret",
    )
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, role: Role) -> tuple[str, ApiKey]:
    """A fresh random key and the entry that configures it (the key itself is not in it)."""
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    return key, ApiKey(name=name, role=role, sha256=digest(key))
