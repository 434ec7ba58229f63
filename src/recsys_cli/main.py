"""The `recsys` command: its command groups put together, and its entry point."""

from __future__ import annotations

import signal
import threading

import typer

from recsys.settings import LogFormat, Settings
from recsys_cli import (
    bench_commands,
    catalog_commands,
    dead_letter_commands,
    key_commands,
    model_commands,
    offline_commands,
    stack_commands,
    worker_commands,
)

app = typer.Typer(
    help="Real-time recommendations on Spark/implicit ALS, Qdrant, Redis and Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Commands of the top level, in the order `recsys --help` lists them.
app.add_typer(offline_commands.app)
app.add_typer(worker_commands.app)
app.add_typer(stack_commands.app)
# Command groups.
app.add_typer(bench_commands.app, name="bench")
app.add_typer(model_commands.app, name="models")
app.add_typer(catalog_commands.app, name="catalog")
app.add_typer(dead_letter_commands.app, name="dead-letters")
app.add_typer(key_commands.app, name="keys")


def main() -> None:
    from recsys.logs import setup_logging

    setup_logging(log_format=_log_format())
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    app()


def _log_format() -> LogFormat:
    """The log format setting; text while the settings do not parse (the command then
    names the bad one)."""
    from pydantic import ValidationError

    try:
        return Settings().log_format
    except ValidationError:
        return "text"
