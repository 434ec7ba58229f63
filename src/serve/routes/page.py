"""The demo web page at GET / (plain HTML, JS and CSS from serve/static, no build step)
and GET /ui/customers, the example customers it offers to pick from (a read key's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from serve.access import ACCESS_RESPONSES, require
from serve.deps import Model, State
from serve.responses import BAD_INPUT, NOT_LIVE
from serve.schemas import ErrorBody

router = APIRouter(tags=["ui"])

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
# Only these files are served: a fixed table, so no request path ever reaches the disk.
STATIC_FILES: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere and runs no inline script: whatever a data value
# held, the browser would not execute it (the page also inserts data as text only).
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
# At most SCAN_CALLS bounded scans per request (recsys.user_store.SCAN_COUNT keys each), so
# the request stays cheap however many keys Redis holds (and never blocks it, as KEYS would).
SCAN_CALLS: Final = 20


class ExampleCustomers(BaseModel):
    model_version: str
    customer_ids: list[str] = Field(
        description="Customers with a vector in the live model version (Redis SCAN order)"
    )


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


@router.get("/ui/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise HTTPException(404, f"no such file: {name[:64]}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=PAGE_HEADERS)


@router.get(
    "/ui/customers",
    # Real customer ids: for keys granting read only (the page sends the one it was given).
    dependencies=[require("read")],
    response_model=ExampleCustomers,
    responses={
        503: {"model": ErrorBody, "description": "No model is live, or Redis does not answer"},
        **BAD_INPUT,
        **NOT_LIVE,
        **ACCESS_RESPONSES,
    },
)
async def example_customers(
    state: State,
    model: Model,
    limit: Annotated[int, Query(ge=1, le=50, description="How many customers (1-50)")] = 12,
) -> ExampleCustomers:
    """Some customers the live model has a vector for, so personalised results (not the
    trending fallback) come back for them; fewer than `limit` if a bounded scan finds fewer."""
    try:
        found = await state.users.customers_with_vectors(model.version, limit, SCAN_CALLS)
    except (RedisError, TimeoutError, OSError) as exc:
        reason = "example customers are unavailable: Redis does not answer"
        raise HTTPException(503, reason) from exc
    return ExampleCustomers(model_version=model.version, customer_ids=found)
