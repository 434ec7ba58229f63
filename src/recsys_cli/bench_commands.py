"""`recsys bench ...`: each benchmark prints a table and writes JSON with the machine."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from recsys.settings import Settings
from recsys_cli.console import console, fail, load_settings, write_json
from recsys_cli.worker_commands import run_uvicorn

if TYPE_CHECKING:
    from simulator.chaos import Action

app = typer.Typer(help="Benchmarks: print a table, write JSON.", no_args_is_help=True)


@app.command("train")
def bench_train(
    ml100k: Annotated[Path | None, typer.Option(help="MovieLens 100k folder")] = Path(
        "../shared/datasets/ml-100k"
    ),
    transactions: Annotated[int, typer.Option(min=1_000)] = 1_000_000,
    rank: Annotated[int, typer.Option(min=2)] = 64,
    iterations: Annotated[int, typer.Option(min=1)] = 10,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/train.json"),
) -> None:
    """implicit against Spark MLlib ALS on the same matrices: wall time and ratio."""
    from recsys.spark import SparkUnavailableError, spark_session
    from recsys_bench import training as bench

    settings = load_settings()
    try:
        with spark_session(settings, "recsys-bench-train") as session:
            datasets = bench.bench_datasets(
                ml100k, transactions, settings.data_dir / "bench", session
            )
            rows = bench.bench_train(
                session,
                datasets,
                rank=rank,
                iterations=iterations,
                scratch_dir=settings.scratch_dir,
            )
    except SparkUnavailableError as exc:
        fail(str(exc))
    console.print(bench.table(rows, rank, iterations))
    write_json(
        json_out,
        {
            "benchmark": "train",
            "rank": rank,
            "iterations": iterations,
            "spark_master": settings.spark_master,
            "rows": [r.to_dict() for r in rows],
        },
    )


@app.command("batch")
def bench_batch(
    sizes: Annotated[str, typer.Option(help="Comma-separated transaction counts")] = (
        "1000000,5000000"
    ),
    shape: Annotated[
        list[str] | None,
        typer.Option(
            help="The H&M data set's shape instead of --sizes: hm-full (31.8M purchases, "
            "1.37M customers, 105k articles) or hm-tenth; repeatable. Adds peak memory, "
            "sizes, Valkey per customer, /recommend and the updater on that model"
        ),
    ] = None,
    serve_seconds: Annotated[float, typer.Option(min=1, help="With --shape: each load")] = 8.0,
    connections: Annotated[int, typer.Option(min=1, help="With --shape: wrk connections")] = 64,
    updater_events: Annotated[
        int, typer.Option(min=1_000, help="With --shape: events the updater drains")
    ] = 200_000,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/batch.json"),
) -> None:
    """The whole batch on generated data at each size: seconds per step; with --shape,
    the data set's real shape end to end."""
    from dataclasses import asdict

    from recsys_bench import batch_run as bench

    settings = load_settings()
    if shape:
        _bench_shapes(settings, shape, serve_seconds, connections, updater_events, json_out)
        return
    rows = bench.bench_batch(settings, _counts(sizes), settings.data_dir / "bench")
    console.print(bench.table(rows))
    write_json(
        json_out,
        {"benchmark": "batch", "trainer": settings.trainer, "rows": [asdict(r) for r in rows]},
    )


def _counts(sizes: str) -> list[int]:
    """--sizes: comma-separated integers, or one line saying what was wrong."""
    try:
        return [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        fail(f"--sizes must be comma-separated integers, got {sizes!r}")


def _bench_shapes(
    settings: Settings,
    shapes: list[str],
    serve_seconds: float,
    connections: int,
    updater_events: int,
    json_out: Path,
) -> None:
    from recsys.spark import SparkUnavailableError, spark_session
    from recsys_bench import shape as bench_scale
    from recsys_bench.serving import WrkMissingError, require_wrk

    unknown = [s for s in shapes if s not in bench_scale.SHAPES]
    if unknown:
        fail(f"unknown shape {unknown[0]!r}: choose from {', '.join(bench_scale.SHAPES)}")
    try:
        require_wrk()
        results = []
        with spark_session(settings, "recsys-bench-shape") as spark:
            for name in shapes:
                console.print(f"[bold]{name}[/bold]: generate, batch, serve, update ...")
                results.append(
                    bench_scale.run_shape(
                        settings, name, settings.data_dir / "bench", spark,
                        serve_s=serve_seconds, connections=connections,
                        updater_events=updater_events,
                    )
                )  # fmt: skip
    except (SparkUnavailableError, WrkMissingError) as exc:
        fail(str(exc))
    console.print(bench_scale.table(results))
    ratio = bench_scale.p99_ratio(results)
    if ratio is not None:
        console.print(f"/recommend p99 at half load, hm-full over hm-tenth: {ratio}x")
    write_json(
        json_out,
        {
            "benchmark": "batch-shape",
            "trainer": settings.trainer,
            "p99_full_over_tenth": ratio,
            "shapes": [r.to_dict() for r in results],
        },
    )


@app.command("archive")
def bench_archive(
    sizes: Annotated[str, typer.Option(help="Comma-separated events already in the table")] = (
        "1000000,10000000"
    ),
    per_day: Annotated[int, typer.Option(min=1_000, help="Events a day in the filled table")] = (
        100_000
    ),
    flushes: Annotated[int, typer.Option(min=1, help="Timed flushes per layout and size")] = 5,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/archive.json"),
) -> None:
    """One archiver flush against a full events table: partitioned by day against one
    unpartitioned table, side by side."""
    from recsys_bench import archiving as bench

    settings = load_settings()
    rows = bench.run(settings.data_dir / "bench", _counts(sizes), per_day, flushes)
    console.print(bench.table(rows, per_day))
    write_json(
        json_out,
        {"benchmark": "archive", "per_day": per_day, "rows": [r.to_dict() for r in rows]},
    )


@app.command("serve")
def bench_serve(
    articles: Annotated[int, typer.Option(min=100)] = 100_000,
    customers: Annotated[int, typer.Option(min=100)] = 100_000,
    transactions: Annotated[int, typer.Option(min=1_000)] = 1_000_000,
    duration: Annotated[float, typer.Option(min=1, help="Seconds per load run")] = 10.0,
    connections: Annotated[int, typer.Option(min=1, help="wrk connections")] = 32,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes, the same for both servers")
    ] = 2,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/serve.json"),
) -> None:
    """/recommend (plain, filter, MMR, explain) against a bare FastAPI endpoint (wrk)."""
    from recsys_bench import serving as bench

    settings = load_settings().model_copy(update={"api_workers": workers})
    try:
        result = bench.run(
            settings,
            articles=articles,
            customers=customers,
            transactions=transactions,
            duration_s=duration,
            connections=connections,
            work_dir=settings.data_dir / "bench",
        )
    except bench.WrkMissingError as exc:
        fail(str(exc))
    console.print(bench.table(result))
    recall = result.ann_recall_at_10
    if recall is not None:
        console.print(
            f"ANN recall@10 against exact search: {recall.unfiltered:.3f} unfiltered "
            f"(hnsw_ef {result.search_ef}); filtered on one product group "
            f"(hnsw_ef {result.filtered_search_ef}): mean {recall.filtered_mean:.3f}, "
            f"worst group {recall.filtered_min:.3f}"
        )
    write_json(json_out, {"benchmark": "serve", **dataclasses.asdict(result)})


@app.command("stream")
def bench_stream(
    events: Annotated[int, typer.Option(min=1_000, help="Events for the throughput run")] = 100_000,
    customers: Annotated[int, typer.Option(min=100)] = 20_000,
    articles: Annotated[int, typer.Option(min=100)] = 5_000,
    transactions: Annotated[int, typer.Option(min=1_000)] = 300_000,
    rate: Annotated[float, typer.Option(min=1, help="Events/s of the freshness run")] = 500.0,
    duration: Annotated[float, typer.Option(min=2, help="Seconds of the freshness run")] = 20.0,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/stream.json"),
) -> None:
    """The updater's events/s with one process, and freshness at a steady event rate."""
    from dataclasses import asdict

    from recsys_bench import streaming as bench

    settings = load_settings()
    result = bench.run(
        settings,
        events=events,
        customers=customers,
        articles=articles,
        transactions=transactions,
        work_dir=settings.data_dir / "bench",
        freshness_rate=rate,
        freshness_duration_s=duration,
    )
    console.print(bench.table(result))
    write_json(json_out, {"benchmark": "stream", **asdict(result)})


@app.command("soak")
def bench_soak(
    duration: Annotated[float, typer.Option(min=30, help="Seconds of load")] = 600.0,
    rate: Annotated[float, typer.Option(min=1, help="Purchases per second")] = 15.0,
    outage: Annotated[
        float, typer.Option("--outage-s", min=1, help="How long each stopped part stays down")
    ] = 8.0,
    customers: Annotated[int, typer.Option(min=100)] = 20_000,
    articles: Annotated[int, typer.Option(min=100)] = 5_000,
    transactions: Annotated[int, typer.Option(min=1_000)] = 200_000,
    chaos: Annotated[
        str,
        typer.Option(
            help="Comma-separated, in order: valkey, broker-freeze, updater, "
            "archiver, broker-restart"
        ),
    ] = "valkey,broker-freeze,updater,archiver,broker-restart",
    poison_share: Annotated[
        float,
        typer.Option(min=0, max=1, help="Bad messages straight onto the topic, per purchase"),
    ] = 0.05,
    json_out: Annotated[Path, typer.Option("--json")] = Path("bench-results/soak.json"),
) -> None:
    """The simulator at a steady rate against the embedded stack (loopback only) while
    Valkey, the broker, the updater and the archiver are stopped and restarted in turn,
    with a share of bad messages put straight onto the events topic; then every
    acknowledged event is checked in the Delta table (once) and in Redis
    (applied once), server errors counted, and each process's memory at start and end.
    Exit 1 when an event was lost, duplicated or applied twice, a 5xx other than the
    broker outage's 503s was answered, or a bad message was applied, archived or stopped
    a worker."""
    import simulator.soak as soak
    from simulator.chaos import ACTIONS

    actions = tuple(a.strip() for a in chaos.split(",") if a.strip())
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        fail(f"unknown chaos action(s) {', '.join(unknown)}; known: {', '.join(ACTIONS)}")
    settings = load_settings()
    options = soak.SoakOptions(
        actions=cast("tuple[Action, ...]", actions),
        duration_s=duration,
        rate_per_s=rate,
        outage_s=outage,
        customers=customers,
        articles=articles,
        transactions=transactions,
        poison_share=poison_share,
    )
    result = soak.run(settings, settings.data_dir / "bench", options)
    console.print(soak.table(result))
    write_json(json_out, {"benchmark": "soak", **result.to_dict()})
    if not result.passed:
        raise typer.Exit(1)


@app.command("bare-server", hidden=True)
def bench_bare_server(
    port: Annotated[int, typer.Option()],
    fixture: Annotated[Path, typer.Option(exists=True)],
    shard: Annotated[Path | None, typer.Option(exists=True, help="For the floors")] = None,
    users: Annotated[Path | None, typer.Option(exists=True, help="For the floors")] = None,
) -> None:
    """The bench's yardstick server (started by `recsys bench serve`), with as many
    workers as the API (RECSYS_API_WORKERS); with a shard and users (their vectors and
    purchases), also the floors (the bare endpoint plus the index search)."""
    from recsys_bench.serving import FIXTURE_ENV, SHARD_ENV, USERS_ENV, Floor, create_bare_app

    if (shard is None) != (users is None):
        fail("--shard and --users go together")
    floor = Floor(shard, users) if shard is not None and users is not None else None
    workers = load_settings().api_workers
    if workers == 1:
        run_uvicorn(create_bare_app(fixture, floor), "127.0.0.1", port)
    else:
        os.environ[FIXTURE_ENV] = str(fixture)
        if floor is not None:
            os.environ[SHARD_ENV], os.environ[USERS_ENV] = str(floor.shard), str(floor.users)
        run_uvicorn("recsys_bench.serving:bare_app_from_environment", "127.0.0.1", port,
                     workers=workers)  # fmt: skip
