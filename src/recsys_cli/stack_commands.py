"""The whole stack at once: up, demo, and the simulator against it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.redaction import redacted_url
from recsys_cli.console import (
    console,
    fail,
    load_settings,
    print_access,
    stack_engines,
    write_json,
)
from recsys_cli.offline_commands import run_batch_command

app = typer.Typer()


@app.command()
def simulate(
    input_dir: Annotated[Path, typer.Option("--input", help="The CSVs the model was trained on")],
    api_url: Annotated[str | None, typer.Option(help="Default: this machine's API port")] = None,
    rate: Annotated[float, typer.Option(min=0.1, help="Target purchases per second")] = 20.0,
    duration: Annotated[float, typer.Option(min=1, help="Seconds")] = 60.0,
    max_events: Annotated[int, typer.Option(min=1)] = 100_000,
    max_requests: Annotated[int, typer.Option(min=1)] = 1_000_000,
    bad_share: Annotated[float, typer.Option(min=0, max=1, help="Requests meant to fail")] = 0.02,
    drift_fraction: Annotated[float, typer.Option(min=0, max=1)] = 0.2,
    drift_at: Annotated[float, typer.Option(min=0, max=1, help="Share of the run")] = 0.5,
    freshness_every: Annotated[int, typer.Option(min=0, help="Probe every Nth purchase")] = 10,
    concurrency: Annotated[int, typer.Option(min=1)] = 32,
    seed: Annotated[int, typer.Option()] = 7,
    experiment: Annotated[
        str | None, typer.Option(help="Report this A/B experiment's result over the run")
    ] = None,
    retry_unavailable: Annotated[
        float,
        typer.Option(
            "--retry-unavailable-s",
            min=0,
            help="Send an event the API refused with 503 again (same event_id) for this long",
        ),
    ] = 0.0,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/simulate.json"),
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RECSYS_SIMULATE_API_KEY",
            show_default=False,
            help="An events key, for an API whose writes need one (prefer the variable: "
            "an argument shows in ps)",
        ),
    ] = None,
) -> None:
    """Realistic shop traffic against a local API (loopback only), bounded in time and
    count: events/s, latency percentiles, errors, and freshness of applied purchases."""
    from simulator import SimulationConfig, SimulatorError, report_table
    from simulator import simulate as run_simulation

    settings = load_settings()
    try:
        config = SimulationConfig(
            input_dir=input_dir,
            api_url=api_url or f"http://127.0.0.1:{settings.api_port}",
            rate_per_s=rate,
            duration_s=duration,
            max_events=max_events,
            max_requests=max_requests,
            bad_request_share=bad_share,
            drift_fraction=drift_fraction,
            drift_at=drift_at,
            freshness_every=freshness_every,
            concurrency=concurrency,
            seed=seed,
            experiment=experiment,
            api_key=api_key,
            retry_unavailable_s=retry_unavailable,
        )
        report = run_simulation(config)
    except SimulatorError as exc:
        fail(str(exc))
    console.print(report_table(report))
    write_json(json_out, {"benchmark": "simulate", **report.to_dict()})
    if report.error_count:
        console.print(f"[red]{report.error_count} requests failed (5xx or transport)[/red]")
        raise typer.Exit(1)


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="API port")] = None,
) -> None:
    """Run engines, API, updater and archiver under one supervisor until Ctrl-C."""
    from recsys.supervisor import Stack, local_access

    settings = load_settings()
    with stack_engines(settings) as endpoints:
        access = local_access(settings)
        api_port = port if port is not None else settings.api_port
        stack = Stack(settings, endpoints, api_port, access=access)
        try:
            stack.start()
            _print_urls(stack.api_url, endpoints.redis_url, endpoints.kafka_bootstrap)
            print_access(console, stack.api_url, access)
            console.print("press Ctrl-C to stop")
            ended = stack.supervise(lambda line: console.print(f"[yellow]{line}[/yellow]"))
            console.print(f"[red]{ended} exited[/red]; stopping (see {settings.run_dir})")
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            stack.stop()


def _print_urls(api: str, redis_url: str | None, kafka: str | None) -> None:
    """The banner of `recsys up`; the engines' passwords hidden."""
    console.print(f"API        {api}   (docs: {api}/docs)")
    console.print(f"Redis      {redacted_url(redis_url)}")
    console.print(f"Kafka      {redacted_url(kafka)}")


@app.command()
def demo(
    once: Annotated[bool, typer.Option(help="Exit after the before/after comparison")] = False,
    port: Annotated[int | None, typer.Option(help="API port (default: a free one)")] = None,
) -> None:
    """Generate data, train, serve, post purchases and show the recommendations change."""
    from recsys_cli.demo import run_demo

    settings = load_settings()
    code = run_demo(settings, console, once=once, port=port, run_batch=run_batch_command)
    if code:
        raise typer.Exit(code)
