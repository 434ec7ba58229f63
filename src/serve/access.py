"""Who may call what, and how often: API keys by role, checked by one dependency factory,
`require(need)` (or `admit` inside a route, when what it needs depends on the request),
and each caller's rate limit (serve.rate_limit); keys expire, and a keys file is
re-read on a timer so keys rotate without a restart. docs/security.md.

A request is admitted once: the first check of a request authenticates it, authorises
it and counts it against its caller's limit; a second check on the same request (a route
of the public router that needs a grant as well) only authorises.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError

from observability.api_metrics import Metrics
from recsys.api_keys import (
    GRANTS,
    ApiKey,
    KeysFileError,
    Role,
    digest,
    duplicate_field,
    read_keys_file,
)
from recsys.settings import Settings
from serve.deps import app_state
from serve.rate_limit import Limit, acquire
from serve.schemas import ErrorBody

log = logging.getLogger(__name__)

# "public": the reads that hold no customer's data (any key, or none unless
# public_reads_require_key); a role: what a key granting it may do ("read": customers' data).
Need = Literal["public"] | Role
# RFC 6750: how a 401 says which credentials the route wants.
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="recsys"'}
# A key is 47 characters (recsys.api_keys); anything much longer is not one, and is not
# hashed.
MAX_KEY_LENGTH: Final = 256
# Where the request's admitted caller is kept, in the ASGI scope.
_CALLER: Final = "recsys.caller"

# What each need asks for, in a refusal's reason.
_WHY: Final[dict[Need, str]] = {
    "public": "this needs an API key (any role)",
    "read": "customers' data (profiles, explanations, customer ids) needs a key with the "
    "read role (read or admin)",
    "events": "this needs events (a key with the role events or admin)",
    "admin": "this needs admin (a key with the role admin)",
    "metrics": "/metrics needs a key with the role metrics or admin",
}

ACCESS_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {
        "model": ErrorBody,
        "description": "No API key where one is needed, an unknown one, or an expired one",
    },
    403: {"model": ErrorBody, "description": "The key's role does not allow this"},
    429: {"model": ErrorBody, "description": "Over the caller's rate limit; see Retry-After"},
}


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None  # None: no key (anonymous, or access checks disabled)
    address: str

    @property
    def keyed(self) -> bool:
        return self.key is not None

    @property
    def kind(self) -> str:
        """The limit it is counted against: its key's role, or anonymous."""
        return self.key.role if self.key else "anonymous"

    @property
    def subject(self) -> str:
        """Its rate-limit bucket: a key's name (never the key), else the client address."""
        return f"key:{self.key.name}" if self.key else f"addr:{self.address}"


# The identity of a keys file's content as far as a stat tells: changed when any differs.
FileStamp = tuple[int, int, int]


def _stamp(path: Path) -> FileStamp:
    stat = os.stat(path)
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _expiry(key: ApiKey) -> float:
    return key.expires.timestamp() if key.expires is not None else math.inf


class Access:
    """The access policy of one app, from the settings: only the keys' hashes are held.
    The keys are RECSYS_API_KEYS and, when set, those of RECSYS_API_KEYS_FILE as last read."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._configured = list(settings.api_keys)
        self._file = settings.api_keys_file
        self._reload_s = settings.api_keys_reload_interval_s
        self._warn_s = settings.api_keys_expiry_warning_days * 86_400
        self._file_stamp: FileStamp | None = None
        self._warned: set[tuple[str, str]] = set()
        # A bad keys file stops the start here, naming the file and the entry.
        file_keys = self._read_file() if self._file is not None else []
        self._install(file_keys)
        self.disabled = settings.auth_disabled
        self.open_writes = settings.open_writes
        self.public_reads_require_key = settings.public_reads_require_key
        s = settings
        self._limits = {
            "events": Limit(s.rate_limit_events_per_s, s.rate_limit_events_burst),
            "read": Limit(s.rate_limit_read_per_s, s.rate_limit_read_burst),
            "admin": Limit(s.rate_limit_admin_per_s, s.rate_limit_admin_burst),
            "metrics": Limit(s.rate_limit_metrics_per_s, s.rate_limit_metrics_burst),
            "anonymous": Limit(s.rate_limit_anonymous_per_s, s.rate_limit_anonymous_burst),
        }
        self._metrics = metrics

    @property
    def keys(self) -> list[ApiKey]:
        """The keys in force (configured and from the keys file), expired ones included."""
        return [key for key, _ in self._by_hash.values()]

    def _read_file(self) -> list[ApiKey]:
        assert self._file is not None
        stamp = _stamp(self._file) if self._file.exists() else None
        keys = read_keys_file(self._file)
        self._file_stamp = stamp
        return keys

    def _install(self, file_keys: list[ApiKey]) -> None:
        """Swap the table in one assignment: a request sees the old keys or the new."""
        keys = [*self._configured, *file_keys]
        if (field := duplicate_field(keys)) is not None:
            raise KeysFileError(
                f"{self._file}: a key has the same {field} as one in RECSYS_API_KEYS"
            )
        self._by_hash = {key.sha256: (key, _expiry(key)) for key in keys}

    def reload_if_changed(self) -> bool:
        """Re-read the keys file when its stat changed; True when the keys were replaced.
        A file that cannot be read or is invalid leaves the keys as they were, logged: an
        editor's half-written save must not lock every client out."""
        if self._file is None:
            return False
        try:
            if _stamp(self._file) == self._file_stamp:
                return False
            before = {key.name for key in self.keys}
            self._install(self._read_file())
        except (OSError, KeysFileError) as exc:
            self._metrics.keys_reload_failures.inc()
            log.warning("API keys file not reloaded, the keys stay as they were: %s", exc)
            return False
        after = {key.name for key in self.keys}
        added, removed = sorted(after - before), sorted(before - after)
        log.info("API keys file reloaded: %d keys; added %s; removed %s", len(after),
                 ", ".join(added) or "none", ", ".join(removed) or "none")  # fmt: skip
        return True

    def warn_of_expiry(self, now: float | None = None) -> None:
        """Log once each key that entered the warning window, and once each that expired."""
        now = time.time() if now is None else now
        for key, expires_at in self._by_hash.values():
            left = expires_at - now
            if left > self._warn_s:
                continue
            state = "expired" if left <= 0 else "expiring"
            if (key.sha256, state) in self._warned:
                continue
            self._warned.add((key.sha256, state))
            if state == "expired":
                log.warning("API key %r expired at %s: it is refused", key.name, key.expires)
            else:
                log.warning("API key %r expires at %s, in %.1f days: rotate it",
                            key.name, key.expires, left / 86_400)  # fmt: skip

    async def watch(self) -> None:
        """Run for the app's lifetime: the keys file re-read when it changed, at most every
        reload interval, and expiries warned of. The request path only reads the table."""
        while True:
            self.warn_of_expiry()
            await asyncio.sleep(self._reload_s)
            if self._file is not None:
                await asyncio.to_thread(self.reload_if_changed)

    @property
    def public_unchecked(self) -> bool:
        """The public reads are open and not limited per address: they need no check at
        all (which keeps the hot path free of the dependency)."""
        public_open = self.disabled or not self.public_reads_require_key
        return public_open and self._limits["anonymous"].unlimited

    def log_policy(self) -> None:
        if self.disabled:
            log.warning("RECSYS_AUTH_DISABLED: every route is open to anyone who can connect")
        elif self.open_writes:
            log.warning("RECSYS_OPEN_WRITES: anyone who can connect may write and administer")
        elif not self._by_hash:
            log.warning("no API key is configured (RECSYS_API_KEYS): every write answers 401")
        else:
            log.info("%d API keys configured", len(self._by_hash))
        self.warn_of_expiry()

    async def admit(self, request: Request, need: Need, presented: str | None) -> Caller:
        caller: Caller | None = request.scope.get(_CALLER)
        if caller is not None:
            self._authorize(caller, need)
            return caller
        caller = self._authenticate(request, presented)
        self._authorize(caller, need)
        await self._count(request, caller)
        request.scope[_CALLER] = caller
        return caller

    def _authenticate(self, request: Request, presented: str | None) -> Caller:
        address = request.client.host if request.client else "unknown"
        if self.disabled or presented is None:
            return Caller(None, address)
        found = self._by_hash.get(digest(presented)) if len(presented) <= MAX_KEY_LENGTH else None
        if found is None:
            self._metrics.auth_failures.labels("unknown").inc()
            raise HTTPException(401, "unknown API key", headers=CHALLENGE)
        key, expires_at = found
        if expires_at <= time.time():
            self._metrics.auth_failures.labels("expired").inc()
            when = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
            raise HTTPException(
                401, f"the API key {key.name!r} expired at {when}: ask for a new one",
                headers=CHALLENGE,
            )  # fmt: skip
        return Caller(key, address)

    def _authorize(self, caller: Caller, need: Need) -> None:
        if self.disabled:
            return
        if need in ("events", "admin", "metrics") and self.open_writes:
            return  # open to anyone: a key sent (the page's read key) is no worse than none
        if caller.key is None:
            if need == "public" and not self.public_reads_require_key:
                return
            self._metrics.auth_failures.labels("missing").inc()
            raise HTTPException(401, self._missing(need), headers=CHALLENGE)
        if need != "public" and need not in GRANTS[caller.key.role]:
            self._metrics.auth_failures.labels("forbidden").inc()
            raise HTTPException(403, f"the key {caller.key.name!r} has the role "
                                     f"{caller.key.role}; {_WHY[need]}")  # fmt: skip

    def _missing(self, need: Need) -> str:
        """Why a request without a key is refused, and what to send."""
        if not self._by_hash:
            return f"{_WHY[need]}, and no API key is configured on this service"
        return f"{_WHY[need]}: Authorization: Bearer <key>, or X-API-Key"

    async def _count(self, request: Request, caller: Caller) -> None:
        limit = self._limits[caller.kind]
        if limit.unlimited:
            return
        try:
            wait_s = await acquire(app_state(request).hot_redis, caller.subject, limit)
        except (RedisError, TimeoutError, OSError):
            # Limits protect the service; Redis down must not take the writes down with it.
            self._metrics.rate_limiter_unavailable.inc()
            return
        if wait_s > 0:
            self._metrics.rate_limited.labels(caller.kind).inc()
            retry = max(1, math.ceil(wait_s))
            raise HTTPException(
                429,
                f"over the rate limit of {limit.per_s:g}/s (burst {limit.burst}): "
                f"retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )


_BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="`Authorization: Bearer <API key>`"
)
_API_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="`X-API-Key: <API key>`"
)


def require(need: Need) -> Any:
    """The dependency admitting a request that needs `need`: 401 (with WWW-Authenticate)
    without a valid key where one is needed or with an unknown one, 403 when the key's
    role does not grant it, 429 (with Retry-After) over the caller's rate limit. Use it
    as `dependencies=[require("admin")]` on a route or router."""

    async def admit_request(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        api_key: Annotated[str | None, Security(_API_KEY)],
    ) -> None:
        presented = bearer.credentials if bearer is not None else api_key
        access: Access = request.app.state.access
        await access.admit(request, need, presented)

    return Depends(admit_request)


async def admit(request: Request, need: Need) -> Caller:
    """What `require(need)` does, from inside a route (explain=true needs read): the
    request's caller, admitted once; the same 401, 403 and 429."""
    bearer = await _BEARER(request)
    presented = bearer.credentials if bearer is not None else await _API_KEY(request)
    access: Access = request.app.state.access
    return await access.admit(request, need, presented)
