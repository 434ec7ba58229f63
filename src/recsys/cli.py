"""The `recsys` command: generate, batch, serve, updater, up, demo."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, Protocol, cast

import typer
from rich.console import Console
from rich.table import Table

from recsys.settings import Settings

if TYPE_CHECKING:
    import redis
    from confluent_kafka import Consumer
    from prometheus_client import CollectorRegistry
    from pyspark.sql import SparkSession

    from batch.evaluation import ModelSpec
    from recsys.engines.embedded import Endpoints, Engine
    from simulator.chaos import Action
    from stream.dead_letters import DeadLetter


class Worker(Protocol):
    def run(self, stop: threading.Event) -> None: ...


app = typer.Typer(
    help="Real-time recommendations on Spark/implicit ALS, Qdrant, Redis and Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
log = logging.getLogger("recsys")


def fail(message: str, code: int = 2) -> NoReturn:
    # One physical line whatever the terminal's width: scripts grep it.
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field, *inner = first["loc"]
        # RECSYS_API_KEYS[0].sha256: which entry of a list setting, and which of its fields.
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in inner)
        fail(f"bad setting RECSYS_{str(field).upper()}{where}: {first['msg']}")


def _drain_hook(settings: Settings) -> Callable[[str], None]:
    from recsys.supervisor import drain_broker

    def drain(bootstrap: str) -> None:
        drain_broker(settings, bootstrap)

    return drain


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for the three CSVs")],
    customers: Annotated[int, typer.Option(min=1)] = 2_000,
    articles: Annotated[int, typer.Option(min=1)] = 1_000,
    transactions: Annotated[int, typer.Option(min=1)] = 50_000,
    seed: int = 42,
    weak_signals: Annotated[
        bool,
        typer.Option(help="Also write weak_signals.csv: views, clicks and add-to-carts"),
    ] = False,
) -> None:
    """Write H&M-schema CSVs with hidden taste clusters, popularity skew and drift."""
    from batch.generate import generate as run_generate

    try:
        data = run_generate(
            out,
            customers=customers,
            articles=articles,
            transactions=transactions,
            seed=seed,
            weak_signals=weak_signals,
        )
    except ValueError as exc:
        fail(str(exc))
    console.print(
        f"wrote {data.transactions:,} transactions, {data.customers:,} customers and "
        f"{data.articles:,} articles to {data.out_dir}"
        + (f", and {data.weak_signals:,} weak signals" if weak_signals else "")
    )


@app.command()
def batch(
    input: Annotated[Path, typer.Option("--input", help="Folder with the H&M-schema CSVs")],
    promote: Annotated[
        bool, typer.Option(help="Make the new version live (else it stays a candidate)")
    ] = True,
    force: Annotated[
        bool, typer.Option(help="Promote even if its holdout NDCG is worse than the live one's")
    ] = False,
) -> None:
    """CSVs to Delta tables, ALS, a new item index version and user vectors; then go live."""
    settings = _settings()
    _run_batch(settings, input, promote=promote, force=force)


def _run_batch(
    settings: Settings, input_dir: Path, *, promote: bool = True, force: bool = False
) -> None:
    from batch.ingest import InputError, check_input
    from batch.pipeline import EmptyTrainingDataError, run_batch
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.progress import Steps
    from recsys.spark import SparkUnavailableError, spark_session
    from recsys.stores import redis_client

    try:
        check_input(input_dir)  # before starting anything: a missing file is one line
    except InputError as exc:
        fail(str(exc))
    from batch.failure import NotEnoughMemoryError, explain

    with EmbeddedEngines(settings, {"redis"}) as endpoints:
        client = redis_client(endpoints.require_redis(), timeout_s=30)
        steps = Steps(console)
        try:
            with steps, contextlib.ExitStack() as stack:
                with steps.step("start Spark"):
                    spark = stack.enter_context(spark_session(settings, "recsys-batch"))
                report = run_batch(
                    settings, input_dir, client, steps, spark, promote_new=promote, force=force
                )
        except (InputError, EmptyTrainingDataError, SparkUnavailableError) as exc:
            fail(str(exc))
        except NotEnoughMemoryError as exc:
            fail(str(exc), code=1)
        except Exception as exc:
            line = explain(steps.current, exc, settings)
            if line is None:
                raise
            fail(line, code=1)
        finally:
            client.close()
    _print_batch_report(report)


def _print_batch_report(report: object) -> None:
    from batch.pipeline import BatchReport

    assert isinstance(report, BatchReport)
    state = "is live" if report.promoted else "is a candidate (recsys models promote)"
    table = Table(title=f"batch: model {report.version} {state}")
    table.add_column("table")
    table.add_column("rows in", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("why skipped")
    for t in report.tables:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in t.skipped.items() if v) or "-"
        table.add_row(t.name, f"{t.rows_in:,}", f"{t.rows_skipped:,}", reasons)
    console.print(table)
    steps = Table(title="steps")
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for name, secs in report.step_seconds.items():
        steps.add_row(name, f"{secs:.2f}")
    console.print(steps)
    console.print(
        f"{report.interactions:,} interactions, {report.users:,} user vectors, "
        f"{report.items:,} item vectors; ALS trained in {report.train_seconds:.2f} s; "
        f"{report.replayed_events:,} archived events replayed onto it"
    )
    if report.metrics:
        console.print(
            "holdout @10: "
            + ", ".join(f"{k.removeprefix('holdout_')} {v:.4f}" for k, v in report.metrics.items())
        )
    console.print(f"promotion: {report.gate_reason}")
    if report.pruned_versions:
        console.print(f"pruned old versions: {', '.join(report.pruned_versions)}")


@app.command()
def evaluate(
    data: Annotated[
        Path, typer.Option(help="An H&M-schema folder or a MovieLens ratings.tsv folder")
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here")] = None,
    spark: Annotated[bool, typer.Option(help="Also evaluate Spark MLlib ALS")] = True,
    max_test_users: Annotated[
        int | None, typer.Option(min=1, help="Evaluate a seeded sample of test users")
    ] = None,
    half_life_days: Annotated[
        float | None,
        typer.Option(min=0, help="Interaction decay (0: none); default: the batch's setting"),
    ] = None,
) -> None:
    """Offline accuracy: NDCG/MAP/Recall@10 and coverage vs popularity, and the EMA replay
    (with weak_signals.csv in the folder, also the weak-signal replay)."""
    from batch.evaluation import EvalConfig, default_models, print_results, run_evaluation

    settings = _settings()
    half_life = settings.interaction_half_life_days if half_life_days is None else half_life_days
    config = EvalConfig(
        max_test_users=max_test_users,
        interaction_half_life_days=half_life or None,
        signal_ema_rate=settings.ema_rate,
    )
    from batch.evaluation_data import detect_source
    from recsys.spark import SparkUnavailableError, spark_session

    try:
        # H&M folders are cleaned by the batch's Spark job, so they need Spark too.
        needs_spark = spark or detect_source(data) == "hm"
    except ValueError as exc:
        fail(str(exc))
    with contextlib.ExitStack() as stack:
        session = None
        if needs_spark:
            try:
                session = stack.enter_context(spark_session(settings, "recsys-evaluate"))
            except SparkUnavailableError as exc:
                fail(str(exc))
        models = default_models()
        if spark and session is not None:
            models.append(_spark_model(settings, session))
        try:
            result = run_evaluation(data, models, config, session)
        except ValueError as exc:
            fail(str(exc))
    print_results(result, console)
    if json_out is not None:
        json_out.write_text(result.to_json())
        console.print(f"results written to {json_out}")


@app.command("evaluate-cold-start")
def evaluate_cold_start(
    data: Annotated[Path, typer.Option(help="An H&M-schema folder (the generator's or real)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here")] = None,
) -> None:
    """Cold start: held-out new articles placed by content vectors, and customers with one
    purchase, against trending (docs/cold_start.md)."""
    from batch.cold_start_eval import print_cold_start, run_cold_start
    from recsys.spark import SparkUnavailableError, spark_session

    settings = _settings()
    try:
        with spark_session(settings, "recsys-cold-start") as session:
            result = run_cold_start(data, session)
    except (SparkUnavailableError, ValueError) as exc:
        fail(str(exc))
    print_cold_start(result, console)
    if json_out is not None:
        json_out.write_text(result.to_json())
        console.print(f"results written to {json_out}")


def _spark_model(settings: Settings, session: SparkSession) -> ModelSpec:
    """Spark MLlib ALS as an evaluated model, with its own (small) grid."""
    from batch.evaluation import ModelSpec
    from batch.spark_trainer import SparkAlsTrainer

    grid = [
        {"rank": 32, "max_iter": 10, "reg_param": reg, "alpha": alpha}
        for reg in (0.05, 0.2)
        for alpha in (1.0, 10.0)
    ]
    return ModelSpec(
        "spark",
        lambda p: SparkAlsTrainer(
            session, seed=settings.als_seed, scratch_dir=settings.scratch_dir, **p
        ),
        grid,
    )


bench_app = typer.Typer(help="Benchmarks: print a table, write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _write_json(path: Path, payload: dict[str, object]) -> None:
    import json

    from recsys.machine import describe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": describe(), **payload}, indent=2, default=str))
    console.print(f"results written to {path}")


@bench_app.command("train")
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

    settings = _settings()
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
    _write_json(
        json_out,
        {
            "benchmark": "train",
            "rank": rank,
            "iterations": iterations,
            "spark_master": settings.spark_master,
            "rows": [r.to_dict() for r in rows],
        },
    )


@bench_app.command("batch")
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

    settings = _settings()
    if shape:
        _bench_shapes(settings, shape, serve_seconds, connections, updater_events, json_out)
        return
    rows = bench.bench_batch(settings, _counts(sizes), settings.data_dir / "bench")
    console.print(bench.table(rows))
    _write_json(
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
    _write_json(
        json_out,
        {
            "benchmark": "batch-shape",
            "trainer": settings.trainer,
            "p99_full_over_tenth": ratio,
            "shapes": [r.to_dict() for r in results],
        },
    )


@bench_app.command("archive")
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

    settings = _settings()
    rows = bench.run(settings.data_dir / "bench", _counts(sizes), per_day, flushes)
    console.print(bench.table(rows, per_day))
    _write_json(
        json_out,
        {"benchmark": "archive", "per_day": per_day, "rows": [r.to_dict() for r in rows]},
    )


@bench_app.command("serve")
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

    settings = _settings().model_copy(update={"api_workers": workers})
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
    _write_json(json_out, {"benchmark": "serve", **dataclasses.asdict(result)})


@bench_app.command("stream")
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

    settings = _settings()
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
    _write_json(json_out, {"benchmark": "stream", **asdict(result)})


@bench_app.command("soak")
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
    settings = _settings()
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
    _write_json(json_out, {"benchmark": "soak", **result.to_dict()})
    if not result.passed:
        raise typer.Exit(1)


@bench_app.command("bare-server", hidden=True)
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
    workers = _settings().api_workers
    if workers == 1:
        _run_uvicorn(create_bare_app(fixture, floor), "127.0.0.1", port)
    else:
        os.environ[FIXTURE_ENV] = str(fixture)
        if floor is not None:
            os.environ[SHARD_ENV], os.environ[USERS_ENV] = str(floor.shard), str(floor.users)
        _run_uvicorn("recsys_bench.serving:bare_app_from_environment", "127.0.0.1", port,
                     workers=workers)  # fmt: skip


models_app = typer.Typer(
    help="Model versions: list, promote, roll back, prune.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _with_redis(action: Callable[[Settings, redis.Redis], None]) -> None:
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.stores import redis_client

    settings = _settings()
    with EmbeddedEngines(settings, {"redis"}) as endpoints:
        client = redis_client(endpoints.require_redis(), timeout_s=30)
        try:
            action(settings, client)
        finally:
            client.close()


@models_app.command("list")
def models_list() -> None:
    """Every version on disk: status, trainer, size, training cutoff."""
    from recsys.versions import list_versions

    def show(settings: Settings, client: redis.Redis) -> None:
        table = Table(title=f"model versions in {settings.models_dir}")
        for col in ("version", "status", "trainer", "dim", "users", "items", "cutoff"):
            table.add_column(col)
        for info in list_versions(settings, client):
            m = info.manifest
            style = "bold green" if info.status == "live" else None
            table.add_row(
                m.version, info.status, m.trainer, str(m.dim), f"{m.users:,}", f"{m.items:,}",
                m.cutoff.isoformat(timespec="seconds"), style=style,
            )  # fmt: skip
        console.print(table)

    _with_redis(show)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="The version to make live")],
) -> None:
    """Replay archived events since the version's cutoff onto it, then make it live."""
    from recsys.versions import VersionError, promote

    def run(settings: Settings, client: redis.Redis) -> None:
        try:
            report = promote(settings, client, version)
        except VersionError as exc:
            fail(str(exc))
        console.print(
            f"{version} is live; replayed {report.events:,} archived events "
            f"({report.applied:,} applied, {report.duplicates:,} already applied)"
        )

    _with_redis(run)


@models_app.command("rollback")
def models_rollback() -> None:
    """Make the previous live version live again (brought up to date by replay)."""
    from recsys.versions import VersionError, rollback

    def run(settings: Settings, client: redis.Redis) -> None:
        try:
            version, report = rollback(settings, client)
        except VersionError as exc:
            fail(str(exc))
        console.print(f"rolled back: {version} is live ({report.applied:,} events replayed)")

    _with_redis(run)


@models_app.command("prune")
def models_prune(
    keep: Annotated[
        int | None,
        typer.Option(min=0, help="Versions to keep for rollback (default: the setting)"),
    ] = None,
) -> None:
    """Delete old versions' Redis keys and files; keep live, newer and rollback ones."""
    from batch.retention import prune

    def run(settings: Settings, client: redis.Redis) -> None:
        pruned = prune(settings, client, settings.model_versions_kept if keep is None else keep)
        for p in pruned:
            files = "its files removed" if p.had_files else "no files"
            console.print(f"pruned {p.version}: {p.redis_keys:,} Redis keys, {files}")
        console.print(f"{len(pruned)} version(s) pruned")

    _with_redis(run)


catalog_app = typer.Typer(
    help="Articles and their availability onto the catalog topic.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")
BAD_ROWS_SHOWN = 20


@catalog_app.command("upsert")
def catalog_upsert(
    file: Annotated[Path, typer.Option("--file", help="An H&M-schema articles CSV")],
) -> None:
    """Validate every row (as POST /items does) and publish the good ones to the catalog
    topic; bad rows are listed with their line and field (exit 1)."""
    from recsys.articles import Article

    _publish_catalog_file(file, Article, "articles")


@catalog_app.command("availability")
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
    from confluent_kafka import Producer

    from recsys.bus import ensure_topics, producer_config
    from recsys.catalog_upload import (
        CatalogFileError,
        catalog_messages,
        count_lines,
        publish_messages,
        read_catalog_file,
    )
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.progress import Steps

    settings = _settings()
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
        bootstrap = endpoints.require_kafka()
        ensure_topics(bootstrap, settings)
        producer = Producer(producer_config(bootstrap, settings))
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


dead_letters_app = typer.Typer(
    help="Dead letters: list them with their reasons, send chosen ones back once fixed "
    "(docs/events.md).",
    no_args_is_help=True,
)
app.add_typer(dead_letters_app, name="dead-letters")


def _dead_letters(everything: bool) -> tuple[Settings, str, list[DeadLetter]]:
    from recsys.engines.embedded import EmbeddedEngines
    from stream.dead_letters import read_dead_letters

    settings = _settings()
    with EmbeddedEngines(settings, {"kafka"}) as endpoints:
        bootstrap = endpoints.require_kafka()
        letters = read_dead_letters(bootstrap, settings)
    return settings, bootstrap, [x for x in letters if everything or not x.resent]


@dead_letters_app.command("list")
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


@dead_letters_app.command("resend")
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
    settings, bootstrap, letters = _dead_letters(everything=True)
    by_ref = {x.ref: x for x in letters}
    fixes = [Fix(ref, by_ref[ref].value if ref in by_ref else b"") for ref in refs or []]
    if file is not None:
        try:
            fixes += fixes_from_lines(file.read_text().splitlines())
        except (OSError, ValueError) as exc:
            fail(f"{file}: {exc}")
    try:
        report = resend(bootstrap, settings, letters, fixes, again=again)
    except ValueError as exc:
        fail(str(exc))
    for ref in report.sent:
        typer.echo(f"sent back: {ref}")
    for ref, why in report.refused.items():
        typer.echo(f"not sent: {ref}: {why}", err=True)
    if report.refused:
        raise typer.Exit(1)


keys_app = typer.Typer(help="API keys of the HTTP API (docs/security.md).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="Who holds it (a service, a person); not secret")],
    role: Annotated[str, typer.Option(help="events (post events) or admin (everything)")],
) -> None:
    """Print a new random key once, and the RECSYS_API_KEYS entry (its hash) that
    configures it. The key is not stored anywhere: hand it over, then forget it."""
    import json

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
) -> None:
    """Serve the HTTP API (uvicorn) on the live model version."""
    from recsys.bus import ensure_topics
    from recsys.engines.embedded import EmbeddedEngines
    from serve.app import create_app

    settings = _settings()
    with EmbeddedEngines(
        settings, {"redis", "kafka"}, before_broker_stop=_drain_hook(settings)
    ) as endpoints:
        ensure_topics(endpoints.require_kafka(), settings)
        resolved = settings.model_copy(
            update={
                "redis_url": endpoints.redis_url,
                "kafka_bootstrap_servers": endpoints.kafka_bootstrap,
            }
        )
        listen = (host or settings.api_host, port if port is not None else settings.api_port)
        if settings.api_workers == 1:
            _run_uvicorn(create_app(resolved), *listen)
        else:
            # Each worker builds its app from the environment, engines included.
            os.environ.update(endpoints.as_env())
            _run_uvicorn("serve.app:app_from_environment", *listen, workers=settings.api_workers)


# How this project runs uvicorn. No access log, at any log level: its lines carry request
# paths, and paths carry customer ids (http_request_duration_seconds counts each request
# by its route template instead).
UVICORN_OPTIONS: Final[Mapping[str, Any]] = MappingProxyType(
    {"log_level": "warning", "access_log": False, "http": "httptools", "loop": "uvloop"}
)


def _run_uvicorn(target: object, host: str, port: int, *, workers: int = 1) -> None:
    """The one way this project runs an HTTP server (the API and the bench's yardstick):
    an app object in this process, or with workers > 1 an app factory's import path run
    in that many processes that share the port and report metrics together."""
    import tempfile

    import uvicorn

    from serve.metrics import MULTIPROC_ENV

    options: dict[str, Any] = {"host": host, "port": port, **UVICORN_OPTIONS}
    if workers == 1:
        uvicorn.run(target, **options)  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="recsys-metrics-") as shared:
        os.environ[MULTIPROC_ENV] = shared
        uvicorn.run(str(target), factory=True, workers=workers, **options)


@app.command()
def updater() -> None:
    """Consume purchase events and move each customer's vector (EMA), once per event."""
    from confluent_kafka import Producer

    from observability.tracing import shutdown as shutdown_tracing
    from observability.tracing import tracer_provider
    from recsys.bus import producer_config
    from recsys.stores import redis_client
    from stream.metrics import UpdaterMetrics
    from stream.updater import Updater

    settings = _settings()
    metrics = UpdaterMetrics()
    provider = tracer_provider(settings, "recsys-updater")

    def make(settings: Settings, endpoints: Endpoints, consumer: Consumer) -> Worker:
        client = redis_client(endpoints.require_redis(), settings.redis_timeout_s * 4)

        def new_dlq() -> Producer:
            return Producer(producer_config(endpoints.require_kafka(), settings))

        tracer = provider.get_tracer("recsys.stream")
        return Updater(settings, client, consumer, new_dlq(), new_dlq_producer=new_dlq,
                       metrics=metrics, tracer=tracer)  # fmt: skip

    try:
        with _metrics_server(settings, metrics.registry):
            _run_consumer(lambda s: s.updater_group, {"redis", "kafka"}, make)
    finally:
        shutdown_tracing(provider)


@app.command()
def archiver() -> None:
    """Append accepted events to the Delta `events` table, exactly once each, and the
    catalog topic's articles to the Delta `items` table (the newest of each)."""
    from confluent_kafka import Producer

    from recsys.bus import producer_config
    from stream.archiver import Archiver

    def make(settings: Settings, endpoints: Endpoints, consumer: Consumer) -> Worker:
        dlq = Producer(producer_config(endpoints.require_kafka(), settings))
        return Archiver(settings, consumer, dlq)

    _run_consumer(lambda s: s.archiver_group, {"kafka"}, make, topics_of=Archiver.topics)


def _run_consumer(
    group_of: Callable[[Settings], str],
    need: set[Engine],
    make: Callable[[Settings, Endpoints, Consumer], Worker],
    *,
    topics_of: Callable[[Settings], list[str]] = lambda s: [s.events_topic],
) -> None:
    """A consumer-group worker: resolve engines, subscribe, run until SIGTERM or Ctrl-C."""
    from confluent_kafka import Consumer

    from recsys.bus import consumer_config, ensure_topics
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.supervisor import ASSIGNED

    settings = _settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    group = group_of(settings)
    with EmbeddedEngines(settings, need, before_broker_stop=_drain_hook(settings)) as endpoints:
        bootstrap = endpoints.require_kafka()
        ensure_topics(bootstrap, settings)
        consumer = Consumer(consumer_config(bootstrap, group, settings))
        topics = topics_of(settings)
        consumer.subscribe(
            topics,
            # The supervisor waits for this line: the worker consumes from here on.
            on_assign=lambda _c, parts: log.info("%s: %s", ASSIGNED, len(parts)),
        )
        log.info("consuming %s as group %s", ", ".join(topics), group)
        try:
            make(settings, endpoints, consumer).run(stop)
        finally:
            consumer.close()


@contextlib.contextmanager
def _metrics_server(settings: Settings, registry: CollectorRegistry) -> Iterator[None]:
    """Serve a worker's Prometheus registry over HTTP while it runs (port 0: not at all)."""
    from prometheus_client import start_http_server

    if not settings.updater_metrics_port:
        yield
        return
    host, port = settings.updater_metrics_host, settings.updater_metrics_port
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        # Events matter more than their metrics: consume anyway, and say so loudly.
        log.warning("metrics NOT served: %s:%d is taken (%s); set RECSYS_UPDATER_METRICS_PORT",
                    host, port, exc)  # fmt: skip
        yield
        return
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


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

    settings = _settings()
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
    _write_json(json_out, {"benchmark": "simulate", **report.to_dict()})
    if report.error_count:
        console.print(f"[red]{report.error_count} requests failed (5xx or transport)[/red]")
        raise typer.Exit(1)


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="API port")] = None,
) -> None:
    """Run engines, API, updater and archiver under one supervisor until Ctrl-C."""
    from recsys.bus import ensure_topics
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.supervisor import Stack, opens_writes

    settings = _settings()
    with EmbeddedEngines(
        settings, {"redis", "kafka"}, before_broker_stop=_drain_hook(settings)
    ) as endpoints:
        ensure_topics(endpoints.require_kafka(), settings)
        open_writes = opens_writes(settings)
        api_port = port if port is not None else settings.api_port
        stack = Stack(settings, endpoints, api_port, open_writes=open_writes)
        try:
            stack.start()
            _print_urls(stack.api_url, endpoints.redis_url, endpoints.kafka_bootstrap)
            if open_writes:
                console.print("writes are open (no RECSYS_API_KEYS, loopback only): for local "
                              "development; docs/security.md")  # fmt: skip
            console.print("press Ctrl-C to stop")
            ended = stack.supervise(lambda line: console.print(f"[yellow]{line}[/yellow]"))
            console.print(f"[red]{ended} exited[/red]; stopping (see {settings.run_dir})")
        except KeyboardInterrupt:
            console.print("stopping…")
        finally:
            stack.stop()


def _print_urls(api: str, redis_url: str | None, kafka: str | None) -> None:
    console.print(f"API        {api}   (docs: {api}/docs)")
    console.print(f"Redis      {redis_url}")
    console.print(f"Kafka      {kafka}")


@app.command()
def demo(
    once: Annotated[bool, typer.Option(help="Exit after the before/after comparison")] = False,
    port: Annotated[int | None, typer.Option(help="API port (default: a free one)")] = None,
) -> None:
    """Generate data, train, serve, post purchases and show the recommendations change."""
    from recsys.demo import run_demo

    settings = _settings()
    code = run_demo(settings, console, once=once, port=port, run_batch=_run_batch)
    if code:
        raise typer.Exit(code)


def main() -> None:
    from recsys.logs import setup_logging

    setup_logging()
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    app()
