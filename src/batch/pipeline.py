"""`recsys batch`: CSVs to Delta tables, ALS, and a new live model version."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from batch import lake
from batch.content_vectors import (
    Placement,
    fit_content_model,
    place_by_content,
    save_content_model,
)
from batch.failure import check_driver_memory
from batch.gate import GateDecision, as_manifest_metrics, decide
from batch.history import (
    iterate_histories,
    iterate_profiles,
    latest_purchases_job,
    profiles_job,
)
from batch.holdout import HoldoutConfig, holdout_fit
from batch.implicit_trainer import FITTED_ALPHA
from batch.ingest import (
    SOURCE_CSV,
    ArchivedPurchases,
    Cleaned,
    TableReport,
    archived_purchases,
    clean,
    load_bronze,
)
from batch.interactions import interactions_job, with_signals
from batch.lake import Lake, Written, open_lake
from batch.model_outputs import write_model_outputs
from batch.online_update import choose_online_update
from batch.publish import calibrate_index, write_index
from batch.retention import Pruned, prune
from batch.stored_interactions import StoredInteractions
from batch.trainer_factory import iterations, open_trainer
from batch.trending import to_lists, trending_job
from batch.tuning import tune
from batch.unavailable_articles import unavailable_articles
from recsys.content_model import ContentModel
from recsys.erasure import erased_before
from recsys.events import event_weights
from recsys.fold_in import FoldInModel, gram
from recsys.hm_schema import ARTICLE_METADATA_FIELDS, CONTENT_FIELDS
from recsys.index.beams import IndexCalibration
from recsys.index.factory import open_backend
from recsys.model_store import (
    Manifest,
    OnlineUpdateRecord,
    TuningRecord,
    new_version,
    read_manifest,
    write_factors,
    write_manifest,
    write_trending,
)
from recsys.online_update import OnlineUpdate
from recsys.progress import Steps
from recsys.replay import ReplayReport
from recsys.settings import Settings
from recsys.trainer import Factors, Trainer
from recsys.user_store import UserStore
from recsys.versions import (
    EVENTS_TABLE_KEY,
    cutoff_of,
    promote,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    version: str
    tables: list[TableReport]
    interactions: int
    users: int
    items: int
    train_seconds: float
    data_version: dict[str, int]
    step_seconds: dict[str, float] = field(default_factory=dict)
    promoted: bool = True
    gate_reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    replayed_events: int = 0
    pruned_versions: list[str] = field(default_factory=list)
    # Of `items`, those nobody has bought, placed by their metadata (batch.content_vectors).
    content_placed: int = 0
    content_metrics: dict[str, float] = field(default_factory=dict)
    tuning: TuningRecord | None = None  # the search that chose the parameters
    online_update: OnlineUpdateRecord | None = None  # RECSYS_ONLINE_UPDATE=auto's choice


def _day_start(day: date | None) -> datetime:
    if day is None:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.combine(day, time.min, tzinfo=UTC)


class EmptyTrainingDataError(ValueError):
    """No valid purchase survived validation, so there is nothing to learn from."""


def run_batch(
    settings: Settings,
    input_dir: Path,
    users: UserStore,
    steps: Steps,
    spark: SparkSession,
    *,
    promote_new: bool = True,
    force: bool = False,
) -> BatchReport:
    """Train a new version; promote it (replay, then live) unless promote_new is False,
    in which case it stays a candidate for `recsys models promote`.

    Every data step is a Spark job on `spark` (local or a cluster) over Delta tables."""
    run = _Run(settings, open_lake(settings, spark), users, steps)
    ingested = _ingest(run, input_dir)
    tuning = _tune(run, spark, ingested)
    built, stored = _build_interactions(run, ingested)
    trainer = open_trainer(run.settings, spark)
    factors = _train(run, trainer, stored, built.rows)
    holdout = _holdout(run, trainer, ingested.purchases)
    version = new_version()
    placed = _place_items(run, version, factors, ingested.cleaned, stored)
    _write_customers(run, version, placed.placement.factors, ingested.purchases)
    manifest = _write_model(run, version, trainer, factors, placed, ingested, holdout, tuning)
    gate, replayed, pruned = _go_live(run, version, manifest, promote_new=promote_new,
                                      force=force)  # fmt: skip
    items = placed.placement.factors
    return BatchReport(
        version=version,
        tables=ingested.reports,
        interactions=built.rows,
        users=len(factors.user_ids),
        items=len(items.item_ids),
        train_seconds=factors.train_seconds,
        data_version=run.data_version,
        step_seconds=dict(steps.seconds),
        promoted=promote_new and gate.promote,
        gate_reason=gate.reason,
        metrics=holdout.metrics,
        replayed_events=replayed.applied if replayed else 0,
        pruned_versions=[p.version for p in pruned],
        content_placed=placed.placement.content_placed,
        content_metrics=content_fit_metrics(placed.content),
        tuning=tuning,
        online_update=holdout.update_record,
    )


@dataclass
class _Run:
    """What every step of one batch run works with, and the table versions it read."""

    settings: Settings
    lake: Lake
    users: UserStore
    steps: Steps
    data_version: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ingested:
    cleaned: Cleaned
    purchases: DataFrame  # the CSVs' and the archive's, as silver.transactions holds them
    purchase_rows: int  # how many
    signals: DataFrame | None  # archived views, clicks and add-to-carts
    archived: ArchivedPurchases | None
    reports: list[TableReport]


def _ingest(run: _Run, input_dir: Path) -> _Ingested:
    """The CSVs into bronze, cleaned and validated; the archived events beside them."""
    store, settings = run.lake, run.settings
    with run.steps.step("load CSVs into bronze"):
        for name, bronze in load_bronze(store, input_dir).items():
            run.data_version[f"bronze.{name}"] = bronze.version

    with run.steps.step("clean and validate"):
        cleaned = clean(store)
        reports = list(cleaned.reports)
        # Training sees the CSVs plus what customers bought through the API since (but
        # never an erased customer's events received before their erasure).
        archived = archived_purchases(
            store, settings.events_table, cleaned.articles, erased_before(settings.lake_dir)
        )
        purchases = cleaned.transactions
        # Views, clicks and add-to-carts count in the interactions only (by their weight),
        # never as purchases: not in the history, the profiles, trending or the holdout.
        signals = None
        if archived is not None:
            reports.append(archived.report)
            purchases = purchases.unionByName(archived.frame)
            signals = archived.signals
        written = {
            **cleaned.written,
            "silver.transactions": store.write(purchases, "silver", "transactions"),
        }
        run.data_version.update({name: w.version for name, w in written.items()})
        # -1: there was no events table yet, so every archived event is new to this version.
        run.data_version[EVENTS_TABLE_KEY] = (
            archived.table_version
            if archived is not None and archived.table_version is not None
            else -1
        )
    rows = written["silver.transactions"].rows
    if rows == 0:
        raise EmptyTrainingDataError(f"no valid transactions in {input_dir}")
    purchases = lake.read(store, "silver", "transactions")
    return _Ingested(cleaned, purchases, rows, signals, archived, reports)


def _holdout_config(settings: Settings) -> HoldoutConfig:
    return HoldoutConfig(customers=settings.holdout_customers, seed=settings.als_seed)


def _tune(run: _Run, spark: SparkSession, ingested: _Ingested) -> TuningRecord | None:
    """The trainer's parameters and the half-life chosen on a validation split; the run
    goes on with them."""
    settings = run.settings
    if not settings.tuning:
        return None
    with run.steps.step("tune on a validation split", total=settings.tuning_max_trials) as advance:
        tuned = tune(
            run.lake,
            spark,
            ingested.purchases,
            ingested.purchase_rows,
            settings,
            _holdout_config(settings),
            advance,
        )
    if tuned is None:
        return None
    run.settings = tuned.settings
    return tuned.record


def _build_interactions(run: _Run, ingested: _Ingested) -> tuple[Written, StoredInteractions]:
    settings = run.settings
    with run.steps.step("build interactions"):
        weighted = with_signals(ingested.purchases, ingested.signals, event_weights(settings))
        built = run.lake.write(
            interactions_job(weighted, settings.interaction_half_life_days or None),
            "silver",
            "interactions",
        )
        run.data_version["silver.interactions"] = built.version
        return built, StoredInteractions.of(run.lake, "silver", "interactions")


def _train(run: _Run, trainer: Trainer, stored: StoredInteractions, rows: int) -> Factors:
    train_step = f"train ALS ({trainer.name})"
    check_driver_memory(trainer.name, rows, train_step)
    with run.steps.step(train_step, total=iterations(run.settings)) as advance:
        done = [0]

        def on_iteration(iteration: int, _total: int) -> None:
            advance(iteration - done[0])
            done[0] = iteration

        return trainer.fit(stored, progress=on_iteration)


@dataclass(frozen=True)
class _Holdout:
    metrics: dict[str, float]  # what the promotion gate compares ({}: the holdout is off)
    update: OnlineUpdate | None = None  # RECSYS_ONLINE_UPDATE=auto: chosen on its replay
    update_record: OnlineUpdateRecord | None = None


def _holdout(run: _Run, trainer: Trainer, purchases: DataFrame) -> _Holdout:
    """The holdout metrics the promotion gate compares and, under
    RECSYS_ONLINE_UPDATE=auto, the online update chosen on the holdout's replay."""
    settings = run.settings
    if not settings.evaluate_before_promotion:
        return _Holdout({})
    config = _holdout_config(settings)
    with run.steps.step("evaluate on a holdout"):
        held, judged = holdout_fit(
            run.lake, purchases, trainer, settings.interaction_half_life_days, config
        )
    metrics = as_manifest_metrics(judged.metrics)
    if settings.online_update != "auto":
        return _Holdout(metrics)
    with run.steps.step("choose the online update on the holdout"):
        update, record = choose_online_update(held, judged, settings, config)
    log.info("online update: %s (%s)", record.chosen or "the settings' EMA", record.protocol)
    return _Holdout(metrics, update, record)


@dataclass(frozen=True)
class _Placed:
    placement: Placement  # the ALS items and those placed by content
    content: ContentModel | None
    index: IndexCalibration  # the beams the version's queries use


def _place_items(
    run: _Run, version: str, factors: Factors, cleaned: Cleaned, stored: StoredInteractions
) -> _Placed:
    """Every catalogue article a vector (ALS, else by content), and the item index."""
    from pyspark.sql import functions as F

    settings = run.settings
    fields = list(ARTICLE_METADATA_FIELDS)
    columns = [*fields, *(f for f in CONTENT_FIELDS if f not in fields)]
    catalogue = cleaned.articles.select("article_id", *columns).toPandas()
    metadata = catalogue.set_index("article_id")[fields]
    unavailable = unavailable_articles(run.lake)
    if unavailable.table_version is not None:
        run.data_version["bronze.availability"] = unavailable.table_version
    content: ContentModel | None = None
    if settings.content_placement:
        with run.steps.step("fit content vectors, place unbought articles"):
            bought = stored.frame.groupBy("article_id").agg(F.sum("weight").alias("weight"))
            content = fit_content_model(
                catalogue,
                factors.item_ids,
                factors.item_factors,
                purchases=bought.toPandas().set_index("article_id")["weight"],
                seed=settings.als_seed,
            )
    # From here on the version's items are the ALS ones plus those placed by content.
    placement = place_by_content(factors, catalogue, content)
    items = placement.factors
    backend = open_backend(settings)
    with run.steps.step("build item index", total=len(items.item_ids)) as advance:
        write_index(
            backend.writer(version, items.dim),
            items,
            metadata,
            advance,
            placed_by=placement.placed_by,
            unavailable=unavailable.article_ids,
        )
    with run.steps.step("choose the index's search beams"):
        index = calibrate_index(backend, version, items, metadata, unavailable.article_ids,
                                settings.index_recall_target)  # fmt: skip
    return _Placed(placement, content, index)


def _write_customers(run: _Run, version: str, items: Factors, purchases: DataFrame) -> None:
    """The version's vectors, the customers' histories and profiles, into the user store."""
    settings, users = run.settings, run.users
    total_vectors = len(items.item_ids) + len(items.user_ids)
    with run.steps.step("write vectors to Redis", total=total_vectors) as advance:
        # Content-placed items too: a purchase of one moves the customer's vector.
        users.write_vectors(version, "item", items.item_ids, items.item_factors, advance)
        users.write_vectors(version, "user", items.user_ids, items.user_factors, advance)

    customers = len(items.user_ids)
    with run.steps.step("write purchase history and profiles", total=2 * customers) as advance:
        for name, job in (
            ("recent_purchases", latest_purchases_job(purchases, settings.history_max_items)),
            ("customer_profiles", profiles_job(purchases)),
        ):
            run.data_version[f"silver.{name}"] = run.lake.write(job, "silver", name).version
        silver = run.lake.lake_dir / "silver"
        histories = iterate_histories(silver / "recent_purchases")
        users.write_histories(
            histories, settings.history_max_items, settings.customer_state_ttl_s, advance
        )
        users.write_profiles(version, iterate_profiles(silver / "customer_profiles"), advance)
        users.compact()


def _write_model(
    run: _Run,
    version: str,
    trainer: Trainer,
    factors: Factors,
    placed: _Placed,
    ingested: _Ingested,
    holdout: _Holdout,
    tuning: TuningRecord | None,
) -> Manifest:
    """Trending, the model's outputs and files, and the manifest that names them."""
    from pyspark.sql import functions as F

    settings, store = run.settings, run.lake
    items, purchases, archived = placed.placement.factors, ingested.purchases, ingested.archived
    with run.steps.step("trending, model outputs and manifest"):
        sizes = {"size": settings.trending_size, "segment_size": settings.trending_segment_size}
        gold = store.write(
            trending_job(
                purchases,
                ingested.cleaned.articles,
                half_life_days=settings.trending_half_life_days,
                metadata_fields=ARTICLE_METADATA_FIELDS,
                **sizes,
            ),
            "gold",
            "trending",
        )
        run.data_version["gold.trending"] = gold.version
        top = to_lists(
            lake.read(store, "gold", "trending"), metadata_fields=ARTICLE_METADATA_FIELDS, **sizes
        )
        outputs = write_model_outputs(store, version, items, placed.placement.placed_by)
        for name, written_out in outputs.items():
            run.data_version[name] = written_out.version
        newest_csv_day = purchases.where(F.col("source") == SOURCE_CSV).agg(F.max("t_dat")).first()
        norms = np.linalg.norm(factors.user_factors, axis=1)
        manifest = Manifest(
            version=version,
            created_at=datetime.now(UTC),
            trainer=trainer.name,
            params=factors.params,
            dim=factors.dim,
            users=len(factors.user_ids),
            items=len(items.item_ids),
            data_version=run.data_version,
            cutoff=cutoff_of(
                _day_start(newest_csv_day[0] if newest_csv_day else None),
                archived.last_ts if archived is not None else None,
            ),
            user_norm_median=float(np.median(norms)) if len(norms) else 1.0,
            train_seconds=factors.train_seconds,
            metrics={**holdout.metrics, **content_fit_metrics(placed.content)},
            tuning=tuning,
            online_update=holdout.update_record,
            index=placed.index,
        )
        write_trending(settings.models_dir, version, top)
        write_factors(
            settings.models_dir,
            version,
            user_ids=items.user_ids,
            item_ids=items.item_ids,
            user_factors=items.user_factors,
            item_factors=items.item_factors,
        )
        if placed.content is not None:
            save_content_model(settings.models_dir, version, placed.content)
        write_manifest(settings.models_dir, manifest)
        meta: dict[str, float | str] = {
            "dim": manifest.dim,
            "user_norm_median": manifest.user_norm_median,
        }
        if trainer.name == "implicit":  # what the updater needs to fold in
            folding = FoldInModel(
                item_gram=gram(factors.item_factors),
                regularization=float(factors.params["regularization"]),
                alpha=float(factors.params.get(FITTED_ALPHA, factors.params["alpha"])),
                half_life_days=settings.interaction_half_life_days,
                regularization_exponent=float(factors.params.get("regularization_exponent", 0)),
            )
            meta.update(folding.meta())
        if holdout.update is not None:  # what the updater applies under auto
            meta.update(holdout.update.meta())
        run.users.write_meta(version, meta)
    return manifest


def _go_live(
    run: _Run, version: str, manifest: Manifest, *, promote_new: bool, force: bool
) -> tuple[GateDecision, ReplayReport | None, list[Pruned]]:
    """The gate against the live version; promote (replay, then live) or leave a
    candidate; prune old versions."""
    settings, users = run.settings, run.users
    live = users.live_version()
    gate = decide(
        manifest,
        read_manifest(settings.models_dir, live) if live else None,
        settings.promotion_max_ndcg_drop,
        force=force,
    )
    replayed: ReplayReport | None = None
    if promote_new and gate.promote:
        with run.steps.step("replay archived events, go live"):
            replayed = promote(settings, users, version)
    else:
        users.add_candidate(version)
    pruned: list[Pruned] = []
    if settings.prune_after_batch:
        with run.steps.step("prune old versions"):
            pruned = prune(settings, users, settings.model_versions_kept)
    return gate, replayed, pruned


def content_fit_metrics(model: ContentModel | None) -> dict[str, float]:
    """The content map's held-out fit, for the manifest beside the holdout metrics."""
    fit = None if model is None else model.fit
    if fit is None or fit.validation_r2 is None or fit.validation_cosine is None:
        return {}
    return {
        "content_validation_r2": fit.validation_r2,
        "content_validation_cosine": fit.validation_cosine,
    }
