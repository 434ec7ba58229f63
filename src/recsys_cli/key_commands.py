"""`recsys keys ...`: API keys of the HTTP API."""

from __future__ import annotations

import json
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
            help="events (post events), read (customers' data: profiles, explanations) "
            "or admin (everything)"
        ),
    ],
) -> None:
    """Print a new random key once, and the RECSYS_API_KEYS entry (its hash) that
    configures it. The key is not stored anywhere: hand it over, then forget it."""

    from pydantic import ValidationError

    from recsys.api_keys import ROLES, new_key

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    try:
        key, entry = new_key(name, role)
    except ValidationError as exc:
        fail(f"bad --name: {exc.errors()[0]['msg']}")
    # Plain lines (no rich wrapping): the key is copied as is.
    typer.echo(f"key (shown once): {key}")
    typer.echo(f"RECSYS_API_KEYS entry: {json.dumps(entry.model_dump())}")
