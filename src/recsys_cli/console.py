"""What every command group shares: the console, one-line failures, the settings, and
the JSON a benchmark writes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

from recsys.settings import Settings

if TYPE_CHECKING:
    from recsys.engines.embedded import Endpoints
    from recsys.supervisor import LocalAccess

console = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    # One physical line whatever the terminal's width: scripts grep it.
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings, or one line naming the bad variable (exit 2)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field, *inner = first["loc"]
        # RECSYS_API_KEYS[0].sha256: which entry of a list setting, and which of its fields.
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in inner)
        fail(f"bad setting RECSYS_{str(field).upper()}{where}: {first['msg']}")


def drain_hook(settings: Settings) -> Callable[[str], None]:
    """Run before an embedded broker stops: wait until the workers consumed everything."""
    from recsys.supervisor import drain_broker

    def drain(bootstrap: str) -> None:
        drain_broker(settings, bootstrap)

    return drain


@contextlib.contextmanager
def stack_engines(settings: Settings) -> Iterator[Endpoints]:
    """Redis and the broker (embedded unless configured), the topics made; an embedded
    broker stops only once the workers have consumed everything."""
    from recsys.bus import ensure_topics
    from recsys.engines.embedded import EmbeddedEngines

    with EmbeddedEngines(
        settings, {"redis", "kafka"}, before_broker_stop=drain_hook(settings)
    ) as endpoints:
        ensure_topics(endpoints.require_kafka(), settings)
        yield endpoints


def write_json(path: Path, payload: dict[str, object]) -> None:
    """A benchmark's results, with the machine they ran on."""
    import json

    from recsys.machine import describe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": describe(), **payload}, indent=2, default=str))
    console.print(f"results written to {path}")


def print_access(out: Console, api_url: str, access: LocalAccess) -> None:
    """The page's address with its read key (the one secret shown, to the person who
    started the stack), or why there is none; whether writes are open."""
    from recsys.supervisor import page_url

    # soft_wrap: one line whatever the terminal's width, so the address copies whole.
    if access.page_key is not None:
        url = page_url(api_url, access.page_key)
        out.print(f"page (its read key in the address): {url}", soft_wrap=True)
    else:
        out.print(
            "bound to 0.0.0.0: nothing is opened and no page key is minted; configure keys "
            "(RECSYS_API_KEYS, docs/security.md)",
            soft_wrap=True,
        )
    if access.open_writes:
        out.print(
            "writes are open (no RECSYS_API_KEYS, loopback only): for local development; "
            "docs/security.md"
        )
