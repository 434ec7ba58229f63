"""`recsys catalog ...`: articles and their availability from a CSV onto the catalog topic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recsys_cli.console import console, fail, load_settings

app = typer.Typer(
    help="Articles and their availability onto the catalog topic.", no_args_is_help=True
)
BAD_ROWS_SHOWN = 20


@app.command("upsert")
def catalog_upsert(
    file: Annotated[Path, typer.Option("--file", help="An H&M-schema articles CSV")],
) -> None:
    """Validate every row (as POST /items does) and publish the good ones to the catalog
    topic; bad rows are listed with their line and field (exit 1)."""
    from recsys.articles import Article

    _publish_catalog_file(file, Article, "articles")


@app.command("availability")
def catalog_availability(
    file: Annotated[
        Path, typer.Option("--file", help="A CSV with article_id and available (true/false)")
    ],
) -> None:
    """Mark articles available or not (as POST /items/availability does): unavailable
    ones leave recommendations, similar items and trending within seconds. Bad rows are
    listed with their line and field (exit 1)."""
    from recsys.articles import Availability

    _publish_catalog_file(file, Availability, "availabilities")


def _publish_catalog_file(file: Path, model: Any, noun: str) -> None:
    """Validate a catalogue file's rows as `model` and publish the good ones."""
    from recsys.bus import KafkaBus
    from recsys.catalog_upload import (
        CatalogFileError,
        catalog_messages,
        count_lines,
        publish_messages,
        read_catalog_file,
    )
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.progress import Steps

    settings = load_settings()
    try:
        lines = count_lines(file)
        with Steps(console) as steps, steps.step("read and validate", total=lines) as advance:
            found = read_catalog_file(file, model, advance)
    except CatalogFileError as exc:
        fail(str(exc))
    for bad in found.bad[:BAD_ROWS_SHOWN]:
        console.print(f"[red]bad row[/red] {bad}", highlight=False)
    if len(found.bad) > BAD_ROWS_SHOWN:
        console.print(f"… and {len(found.bad) - BAD_ROWS_SHOWN:,} more bad rows")
    with EmbeddedEngines(settings, {"kafka"}) as endpoints:
        if "kafka" in endpoints.owned:
            # It keeps messages in memory only: they would be gone when this command ends.
            fail("no broker is running: start `recsys up` or set RECSYS_KAFKA_BOOTSTRAP_SERVERS")
        bus = KafkaBus(endpoints.require_kafka(), settings)
        bus.ensure_topics()
        producer = bus.producer()
        total = len(found.records)
        with Steps(console) as steps, steps.step(f"publish {noun}", total=total) as advance:
            lost = publish_messages(
                producer,
                settings.catalog_topic,
                catalog_messages(found.records),
                timeout_s=settings.kafka_produce_timeout_s + 5,
                advance=advance,
            )
    published = len(found.records) - lost
    console.print(
        f"{published:,} of {found.rows:,} {noun} published to {settings.catalog_topic}; "
        f"{len(found.bad):,} bad rows"
    )
    if lost:
        fail(f"{lost:,} {noun} were not acknowledged by the broker: run it again (safe)", 1)
    if found.bad:
        raise typer.Exit(1)
