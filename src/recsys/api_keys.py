"""API keys: what a configured key is (name, role, SHA-256 of the key, an optional expiry),
how one is made, and how a keys file is read.

Only the hash is configured and held. A key is 256 random bits, so its SHA-256 cannot be
reversed by guessing; a slow password hash (bcrypt, argon2) protects low-entropy secrets
and would add milliseconds to every request for nothing here (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# events: post events. read: read customers' data (profiles, explanations, the page's
# customer list). admin: promote and roll back models, upsert the catalogue, run
# experiments, erase customers, and post events and read customers' data too. metrics:
# scrape /metrics and nothing else, so the key a Prometheus holds grants no data or write.
Role = Literal["events", "read", "admin", "metrics"]
ROLES: Final[tuple[Role, ...]] = ("events", "read", "admin", "metrics")
# What a key of each role may do besides the public reads (which any key may make).
GRANTS: Final[dict[Role, frozenset[Role]]] = {
    "events": frozenset({"events"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"events", "read", "admin", "metrics"}),
    "metrics": frozenset({"metrics"}),
}
# A prefix makes a leaked key easy to recognise (secret scanners, log reviews).
KEY_PREFIX: Final = "rsk_"
KEY_BYTES: Final = 32


class ApiKey(BaseModel):
    """One configured key: `{"name": ..., "role": ..., "sha256": ..., "expires": ...}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Who holds it (metrics, rate-limit buckets); not a secret",
    )
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    # With a zone ("2026-07-01T00:00:00Z"): a time without one means different instants
    # on different hosts.
    expires: AwareDatetime | None = Field(
        default=None, description="ISO 8601 date-time after which the key answers 401"
    )

    def entry(self) -> dict[str, object]:
        """As configured: JSON-ready, without an expiry it does not have."""
        return self.model_dump(mode="json", exclude_none=True)


_KEY_LIST: Final = TypeAdapter(list[ApiKey])


class KeysFileError(ValueError):
    """A keys file that cannot be read or holds something other than key entries; the
    message is one line naming the file and what is wrong."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, role: Role, expires: datetime | None = None) -> tuple[str, ApiKey]:
    """A fresh random key and the entry that configures it (the key itself is not in it)."""
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    return key, ApiKey(name=name, role=role, sha256=digest(key), expires=expires)


def duplicate_field(keys: Iterable[ApiKey]) -> str | None:
    """The field two keys share, "name" or "sha256", else None: a name is a rate-limit
    bucket and a hash identifies one caller, so both must be unique."""
    keys = list(keys)
    for field in ("name", "sha256"):
        seen = [getattr(k, field) for k in keys]
        if len(set(seen)) != len(seen):
            return field
    return None


def read_keys_file(path: Path) -> list[ApiKey]:
    """The entries of a keys file: a JSON list, as RECSYS_API_KEYS holds them."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        keys = _KEY_LIST.validate_python(json.loads(text) if text.strip() else [])
    except json.JSONDecodeError as exc:
        raise KeysFileError(f"{path}: not JSON ({exc.msg} at character {exc.pos})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        index, *fields = error["loc"]
        where = "".join(f".{part}" for part in fields)
        raise KeysFileError(f"{path}: [{index}]{where}: {error['msg']}") from None
    if (field := duplicate_field(keys)) is not None:
        raise KeysFileError(f"{path}: two keys have the same {field}")
    return keys
