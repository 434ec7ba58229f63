"""`recsys keys ...`: API keys of the HTTP API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from recsys_cli.console import fail

app = typer.Typer(help="API keys of the HTTP API (docs/security.md).", no_args_is_help=True)


@app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="Who holds it (a service, a person); not secret")],
    role: Annotated[
        str,
        typer.Option(
            help="events (post events), read (customers' data: profiles, explanations), "
            "metrics (scrape /metrics) or admin (everything)"
        ),
    ],
    expires: Annotated[
        str | None,
        typer.Option(
            help="When the key stops working: an ISO 8601 date or date-time "
            "(2026-07-01, 2026-07-01T12:00:00+02:00); without a zone, UTC"
        ),
    ] = None,
) -> None:
    """Print a new random key once, and the RECSYS_API_KEYS (or keys file) entry, its
    hash, that configures it. The key is not stored anywhere: hand it over, then forget it."""

    from pydantic import ValidationError

    from recsys.api_keys import ROLES, new_key

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    until = _expiry(expires) if expires is not None else None
    try:
        key, entry = new_key(name, role, until)
    except ValidationError as exc:
        fail(f"bad --name: {exc.errors()[0]['msg']}")
    # Plain lines (no rich wrapping): the key is copied as is.
    typer.echo(f"key (shown once): {key}")
    typer.echo(f"RECSYS_API_KEYS entry: {json.dumps(entry.entry())}")


def _expiry(text: str) -> datetime:
    """--expires as a future date-time in UTC (a date is its midnight; no zone: UTC)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--expires must be an ISO 8601 date or date-time (2026-07-01), got {text!r}")
    # In UTC, as every entry: expiries compare at a glance in the keys file.
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= datetime.now(UTC):
        fail(f"--expires {text} is in the past")
    return when
