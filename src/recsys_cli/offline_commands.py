"""Commands that build and judge models offline: generate, batch, evaluate,
evaluate-cold-start."""

from __future__ import annotations

import contextlib
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from recsys.settings import Settings
from recsys_cli.console import console, fail, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from batch.eval_config import EvalConfig
    from batch.model_specs import ModelSpec

app = typer.Typer()


class Protocol(enum.StrEnum):
    PER_USER = "per-user"
    HM_WEEK = "hm-week"
    FEW_PURCHASES = "few-purchases"


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
    profile: Annotated[
        str,
        typer.Option(
            help="default (tastes drift), no-drift, repurchase (35% of lines rebuy) or "
            "seasonal (each taste has its season)"
        ),
    ] = "default",
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
            profile=profile,
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
    settings = load_settings()
    run_batch_command(settings, input, promote=promote, force=force)


def run_batch_command(
    settings: Settings, input_dir: Path, *, promote: bool = True, force: bool = False
) -> None:
    from batch.ingest import InputError, check_input
    from batch.pipeline import EmptyTrainingDataError, run_batch
    from recsys.engines.embedded import EmbeddedEngines
    from recsys.progress import Steps
    from recsys.spark import SparkUnavailableError, spark_session
    from recsys.stores import redis_client
    from recsys.user_store import RedisUserStore

    try:
        check_input(input_dir)  # before starting anything: a missing file is one line
    except InputError as exc:
        fail(str(exc))
    from batch.failure import NotEnoughMemoryError, explain

    with EmbeddedEngines(settings, {"redis"}) as endpoints:
        client = redis_client(endpoints.require_redis(), 30, cluster=settings.redis_cluster)
        steps = Steps(console)
        try:
            with steps, contextlib.ExitStack() as stack:
                with steps.step("start Spark"):
                    spark = stack.enter_context(spark_session(settings, "recsys-batch"))
                report = run_batch(
                    settings,
                    input_dir,
                    RedisUserStore(client),
                    steps,
                    spark,
                    promote_new=promote,
                    force=force,
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
    if report.tuning is not None:
        tuning = report.tuning
        chosen = ", ".join(f"{k} {v:g}" for k, v in tuning.chosen.items())
        best = tuning.trials[0].validation_ndcg
        was = (
            f" against {tuning.settings_ndcg:.4f} as set"
            if tuning.settings_ndcg is not None
            else ""
        )
        console.print(
            f"tuned in {tuning.seconds:.0f} s ({len(tuning.trials)} trials): {chosen}; "
            f"validation NDCG@10 {best:.4f}{was}"
        )
    if report.metrics:
        console.print(
            "holdout @10: "
            + ", ".join(f"{k.removeprefix('holdout_')} {v:.4f}" for k, v in report.metrics.items())
        )
    if report.online_update is not None:
        update = report.online_update
        best = update.hit_rates.get(update.chosen or "", update.static_hit_rate)
        console.print(
            f"online update: {update.chosen or 'the EMA at RECSYS_EMA_RATE (too few events)'};"
            f" next-event HitRate@10 {best:.4f} against {update.static_hit_rate:.4f} static "
            f"({update.events:,} holdout purchases replayed in {update.seconds:.1f} s)"
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
    spark: Annotated[
        bool, typer.Option(help="Also evaluate the batch's other ALS trainer, Spark MLlib's")
    ] = True,
    max_test_users: Annotated[
        int | None, typer.Option(min=1, help="Evaluate a seeded sample of test users")
    ] = None,
    half_life_days: Annotated[
        float | None,
        typer.Option(
            min=0, help="Fix the ALS trainers' interaction decay (0: none); default: searched"
        ),
    ] = None,
    ease_max_items: Annotated[
        int | None,
        typer.Option(min=1, help="EASE keeps this many of the most bought items [10,000]"),
    ] = None,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="per-user: each customer's last 20% held out; hm-week: the H&M "
            "competition's, MAP@12 on the last 7 days; few-purchases: that week's buyers "
            "with one or two purchases before, the vector against trending and blends"
        ),
    ] = Protocol.PER_USER,
) -> None:
    """Offline accuracy: NDCG/MAP/Recall@10 and coverage of the pipeline (the batch's
    trainer and search) against popularity, item-kNN, EASE and both ALS trainers, and the
    EMA replay (with weak_signals.csv in the folder, also the weak-signal replay); or the
    H&M competition's MAP@12 (--protocol hm-week); or customers with one or two
    purchases, their vector blended with trending (--protocol few-purchases)."""
    from batch.eval_config import EvalConfig
    from batch.evaluation import print_results, run_evaluation
    from batch.evaluation_data import detect_source
    from batch.model_specs import default_models
    from recsys.spark import SparkUnavailableError, spark_session

    settings = load_settings()
    config = EvalConfig(
        max_test_users=max_test_users,
        signal_ema_rate=settings.ema_rate,
        search_budget_s=settings.tuning_budget_s,
        search_max_trials=settings.tuning_max_trials,
    )
    try:
        # H&M folders are cleaned by the batch's Spark job, so they need Spark too.
        needs_spark = spark or detect_source(data) == "hm" or settings.trainer == "spark"
    except ValueError as exc:
        fail(str(exc))
    with contextlib.ExitStack() as stack:
        session = None
        if needs_spark:
            try:
                session = stack.enter_context(spark_session(settings, "recsys-evaluate"))
            except SparkUnavailableError as exc:
                fail(str(exc))
        try:
            models = default_models(
                settings,
                session,
                other_trainer=spark,
                half_life=half_life_days,
                ease_max_items=ease_max_items,
            )
            if protocol is Protocol.HM_WEEK:
                from batch.competition import print_competition, run_competition
                from batch.evaluation_data import load_events

                week = run_competition(
                    load_events(data, session),
                    models,
                    config,
                    exclude_purchased=settings.exclude_purchased,
                )
                print_competition(week, console)
                written = week.to_json()
            elif protocol is Protocol.FEW_PURCHASES:
                written = _few_purchases(data, models, config, settings, session)
            else:
                result = run_evaluation(data, models, config, session)
                print_results(result, console)
                written = result.to_json()
        except ValueError as exc:
            fail(str(exc))
    if json_out is not None:
        json_out.write_text(written)
        console.print(f"results written to {json_out}")


def _few_purchases(
    data: Path,
    models: list[ModelSpec],
    config: EvalConfig,
    settings: Settings,
    session: SparkSession | None,
) -> str:
    from batch.cold_start_eval import read_articles
    from batch.evaluation_data import detect_source, load_events
    from batch.few_purchases import (
        article_groups,
        pipeline_spec,
        print_few_purchases,
        run_few_purchases,
    )

    groups = article_groups(read_articles(data)) if detect_source(data) == "hm" else None
    result = run_few_purchases(
        load_events(data, session),
        groups,
        pipeline_spec(models),
        config,
        settings.trending_half_life_days,
    )
    print_few_purchases(result, console)
    return result.to_json()


@app.command("evaluate-cold-start")
def evaluate_cold_start(
    data: Annotated[Path, typer.Option(help="An H&M-schema folder (the generator's or real)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here")] = None,
) -> None:
    """Cold start: held-out new articles placed by content vectors, and customers with one
    purchase, against trending (docs/cold_start.md)."""
    from batch.cold_start_eval import print_cold_start, run_cold_start
    from recsys.spark import SparkUnavailableError, spark_session

    settings = load_settings()
    try:
        with spark_session(settings, "recsys-cold-start") as session:
            result = run_cold_start(data, session)
    except (SparkUnavailableError, ValueError) as exc:
        fail(str(exc))
    print_cold_start(result, console)
    if json_out is not None:
        json_out.write_text(result.to_json())
        console.print(f"results written to {json_out}")
