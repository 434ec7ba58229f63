"""`recsys models ...`: list, promote, roll back and prune model versions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from recsys.settings import Settings
from recsys_cli.console import console, fail, load_settings

if TYPE_CHECKING:
    from recsys.user_store import UserStore

app = typer.Typer(help="Model versions: list, promote, roll back, prune.", no_args_is_help=True)


def _with_store(action: Callable[[Settings, UserStore], None]) -> None:
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.stores import redis_client
    from recsys.user_store import RedisUserStore

    settings = load_settings()
    with EmbeddedEngines(settings, {"redis"}) as endpoints:
        client = redis_client(endpoints.require_redis(), 30, cluster=settings.redis_cluster)
        try:
            action(settings, RedisUserStore(client))
        finally:
            client.close()


@app.command("list")
def models_list() -> None:
    """Every version on disk: status, trainer, size, training cutoff."""
    from recsys.versions import list_versions

    def show(settings: Settings, store: UserStore) -> None:
        table = Table(title=f"model versions in {settings.models_dir}")
        for col in ("version", "status", "trainer", "dim", "users", "items", "cutoff"):
            table.add_column(col)
        for info in list_versions(settings, store):
            m = info.manifest
            style = "bold green" if info.status == "live" else None
            table.add_row(
                m.version, info.status, m.trainer, str(m.dim), f"{m.users:,}", f"{m.items:,}",
                m.cutoff.isoformat(timespec="seconds"), style=style,
            )  # fmt: skip
        console.print(table)

    _with_store(show)


@app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="The version to make live")],
) -> None:
    """Replay archived events since the version's cutoff onto it, then make it live."""
    from recsys.versions import VersionError, promote

    def run(settings: Settings, store: UserStore) -> None:
        try:
            report = promote(settings, store, version)
        except VersionError as exc:
            fail(str(exc))
        console.print(
            f"{version} is live; replayed {report.events:,} archived events "
            f"({report.applied:,} applied, {report.duplicates:,} already applied)"
        )

    _with_store(run)


@app.command("rollback")
def models_rollback() -> None:
    """Make the previous live version live again (brought up to date by replay)."""
    from recsys.versions import VersionError, rollback

    def run(settings: Settings, store: UserStore) -> None:
        try:
            version, report = rollback(settings, store)
        except VersionError as exc:
            fail(str(exc))
        console.print(f"rolled back: {version} is live ({report.applied:,} events replayed)")

    _with_store(run)


@app.command("prune")
def models_prune(
    keep: Annotated[
        int | None,
        typer.Option(min=0, help="Versions to keep for rollback (default: the setting)"),
    ] = None,
) -> None:
    """Delete old versions' Redis keys and files; keep live, newer and rollback ones."""
    from batch.retention import prune

    def run(settings: Settings, store: UserStore) -> None:
        pruned = prune(settings, store, settings.model_versions_kept if keep is None else keep)
        for p in pruned:
            files = "its files removed" if p.had_files else "no files"
            console.print(f"pruned {p.version}: {p.redis_keys:,} Redis keys, {files}")
        console.print(f"{len(pruned)} version(s) pruned")

    _with_store(run)
