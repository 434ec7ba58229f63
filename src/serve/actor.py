"""Who a request acts as, for the audit line: its API key's name, never the key."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request

from serve.access import admit

# The actor of a request admitted without a key (RECSYS_AUTH_DISABLED). Its address is
# not named: an address can be a person's.
ANONYMOUS: Final = "anonymous"


async def acting_key(request: Request) -> str:
    """The name of the key the admin route was admitted with (its check ran first, so
    this only reads the admitted caller back)."""
    caller = await admit(request, "admin")
    return caller.key.name if caller.key is not None else ANONYMOUS
