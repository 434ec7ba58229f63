"""`recsys batch`: CSVs to Delta tables, ALS, and a new live model version."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import redis

from batch import lake
from batch.gate import as_manifest_metrics, decide, holdout_metrics
from batch.hm_schema import ARTICLE_METADATA_FIELDS
from batch.ingest import TableReport, read_archived_purchases, read_input
from batch.interactions import build_interactions
from batch.publish import write_history, write_index, write_meta, write_vectors
from batch.trainer_factory import iterations, open_trainer
from batch.trending import trending
from batch.versions import (
    EVENTS_TABLE_KEY,
    cutoff_of,
    live_version,
    promote,
    register_candidate,
)
from recsys.index.factory import open_writer
from recsys.model_store import (
    Manifest,
    new_version,
    read_manifest,
    write_factors,
    write_manifest,
    write_trending,
)
from recsys.progress import Steps
from recsys.settings import Settings
from stream.replay import ReplayReport


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


class EmptyTrainingDataError(ValueError):
    """No valid purchase survived validation, so there is nothing to learn from."""


def run_batch(
    settings: Settings,
    input_dir: Path,
    client: redis.Redis,
    steps: Steps,
    *,
    promote_new: bool = True,
    force: bool = False,
) -> BatchReport:
    """Train a new version; promote it (replay, then live) unless promote_new is False,
    in which case it stays a candidate for `recsys models promote`."""
    with steps.step("read and validate CSVs"):
        raw = read_input(input_dir)
        archived = read_archived_purchases(settings.events_table, raw.articles["article_id"])
        raw.reports.append(archived.report)
        # Training sees the CSVs plus what customers bought through the API since.
        purchases = (
            pd.concat([raw.transactions, archived.frame], ignore_index=True)
            if not archived.frame.empty
            else raw.transactions
        )
    if purchases.empty:
        raise EmptyTrainingDataError(f"no valid transactions in {input_dir}")

    data_version: dict[str, int] = {}
    # -1: there was no events table yet, so every archived event is new to this version.
    data_version[EVENTS_TABLE_KEY] = (
        archived.table_version if archived.table_version is not None else -1
    )
    with steps.step("write Delta tables", total=5) as advance:
        lake_dir = settings.lake_dir
        interactions = build_interactions(purchases, settings.interaction_half_life_days or None)
        for layer, name, frame in (
            ("bronze", "articles", raw.articles),
            ("bronze", "customers", raw.customers),
            ("bronze", "transactions", raw.transactions),
            ("silver", "interactions", interactions),
            ("silver", "items", raw.articles),
        ):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            data_version[f"{layer}.{name}"] = lake.overwrite(lake_dir, layer, name, table)
            advance(1)

    total_iterations = iterations(settings)
    metrics: dict[str, float] = {}
    # One trainer (for Spark, one session) serves the model and its holdout measure.
    with open_trainer(settings) as trainer:
        with steps.step(f"train ALS ({trainer.name})", total=total_iterations) as advance:
            done = [0]

            def on_iteration(iteration: int, _total: int) -> None:
                advance(iteration - done[0])
                done[0] = iteration

            factors = trainer.fit(interactions, progress=on_iteration)
        if settings.evaluate_before_promotion:
            with steps.step("evaluate on a holdout"):
                metrics = as_manifest_metrics(
                    holdout_metrics(purchases, trainer, settings.interaction_half_life_days)
                )

    version = new_version()
    metadata = raw.articles.set_index("article_id")[list(ARTICLE_METADATA_FIELDS)]
    with steps.step("build item index", total=len(factors.item_ids)) as advance:
        write_index(open_writer(settings, version, factors.dim), factors, metadata, advance)

    total_vectors = len(factors.item_ids) + len(factors.user_ids)
    with steps.step("write vectors to Redis", total=total_vectors) as advance:
        write_vectors(client, version, factors, advance)

    customers = int(purchases["customer_id"].nunique())
    with steps.step("write purchase history", total=customers) as advance:
        write_history(client, purchases, settings.history_max_items, advance)

    with steps.step("trending and manifest"):
        top = trending(
            purchases,
            raw.articles,
            half_life_days=settings.trending_half_life_days,
            size=settings.trending_size,
            segment_size=settings.trending_segment_size,
            metadata_fields=ARTICLE_METADATA_FIELDS,
        )
        norms = np.linalg.norm(factors.user_factors, axis=1)
        manifest = Manifest(
            version=version,
            created_at=datetime.now(UTC),
            trainer=trainer.name,
            params=factors.params,
            dim=factors.dim,
            users=len(factors.user_ids),
            items=len(factors.item_ids),
            data_version=data_version,
            cutoff=cutoff_of(
                raw.transactions["t_dat"].max().to_pydatetime().replace(tzinfo=UTC)
                if not raw.transactions.empty
                else datetime.min.replace(tzinfo=UTC),
                archived.last_ts,
            ),
            user_norm_median=float(np.median(norms)) if len(norms) else 1.0,
            train_seconds=factors.train_seconds,
            metrics=metrics,
        )
        write_trending(settings.models_dir, version, top)
        write_factors(
            settings.models_dir,
            version,
            user_ids=factors.user_ids,
            item_ids=factors.item_ids,
            user_factors=factors.user_factors,
            item_factors=factors.item_factors,
        )
        write_manifest(settings.models_dir, manifest)
        write_meta(
            client,
            version,
            {"dim": manifest.dim, "user_norm_median": manifest.user_norm_median},
        )

    live = live_version(client)
    gate = decide(
        manifest,
        read_manifest(settings.models_dir, live) if live else None,
        settings.promotion_max_ndcg_drop,
        force=force,
    )
    replayed: ReplayReport | None = None
    if promote_new and gate.promote:
        with steps.step("replay archived events, go live"):
            replayed = promote(settings, client, version)
    else:
        register_candidate(client, version)

    return BatchReport(
        version=version,
        tables=raw.reports,
        interactions=len(interactions),
        users=len(factors.user_ids),
        items=len(factors.item_ids),
        train_seconds=factors.train_seconds,
        data_version=data_version,
        step_seconds=dict(steps.seconds),
        promoted=promote_new and gate.promote,
        gate_reason=gate.reason,
        metrics=metrics,
        replayed_events=replayed.applied if replayed else 0,
    )
