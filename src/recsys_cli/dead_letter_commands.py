"""`recsys dead-letters ...`: list dead letters, send chosen ones back once fixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from recsys.settings import Settings
from recsys_cli.console import fail, load_settings

if TYPE_CHECKING:
    from recsys.bus import KafkaBus
    from stream.dead_letters import DeadLetter

app = typer.Typer(
    help="Dead letters: list them with their reasons, send chosen ones back once fixed "
    "(docs/events.md).",
    no_args_is_help=True,
)


def _dead_letters(everything: bool) -> tuple[Settings, KafkaBus, list[DeadLetter]]:
    from recsys.bus import KafkaBus
    from recsys.engines.embedded import EmbeddedEngines
    from stream.dead_letters import read_dead_letters

    settings = load_settings()
    with EmbeddedEngines(settings, {"kafka"}) as endpoints:
        bus = KafkaBus(endpoints.require_kafka(), settings)
        letters = read_dead_letters(bus, settings)
    return settings, bus, [x for x in letters if everything or not x.resent]


@app.command("list")
def dead_letters_list(
    everything: Annotated[bool, typer.Option("--all", help="Also those sent back")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write them here, one JSON line each, to edit")
    ] = None,
) -> None:
    """The dead letters still to act on, oldest first: offset, when, why, the message."""
    _, _, letters = _dead_letters(everything)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text("".join(json.dumps(x.as_json()) + "\n" for x in letters))
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("offset", "dead-lettered at", "reason", "message"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        when = letter.dead_at.strftime("%Y-%m-%d %H:%M:%S") if letter.dead_at else "-"
        text = letter.value[:120].decode(errors="replace")
        mark = " (sent back)" if letter.resent else ""
        table.add_row(letter.ref + mark, when, letter.reason[:200], text)
    Console().print(table)


@app.command("resend")
def dead_letters_resend(
    refs: Annotated[
        list[str] | None, typer.Argument(help="Offsets (N or PARTITION:N) to send back as they are")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="Lines of `list --json`, edited: each line's event is sent back"),
    ] = None,
    again: Annotated[bool, typer.Option(help="Also those sent back before")] = False,
) -> None:
    """Send dead letters back to the events topic: as they are (the fault was elsewhere,
    say a Redis key of the wrong type since fixed) or as fixed in a file. Each must be
    an event by today's rule; what is not is named and left where it is."""
    from stream.dead_letters import Fix, fixes_from_lines, resend

    if not refs and file is None:
        fail("name dead letters by offset, or give --file with fixed lines")
    settings, bus, letters = _dead_letters(everything=True)
    by_ref = {x.ref: x for x in letters}
    fixes = [Fix(ref, by_ref[ref].value if ref in by_ref else b"") for ref in refs or []]
    if file is not None:
        try:
            fixes += fixes_from_lines(file.read_text().splitlines())
        except (OSError, ValueError) as exc:
            fail(f"{file}: {exc}")
    try:
        report = resend(bus, settings, letters, fixes, again=again)
    except ValueError as exc:
        fail(str(exc))
    for ref in report.sent:
        typer.echo(f"sent back: {ref}")
    for ref, why in report.refused.items():
        typer.echo(f"not sent: {ref}: {why}", err=True)
    if report.refused:
        raise typer.Exit(1)
