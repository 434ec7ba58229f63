"""The simulator measuring an A/B experiment against the real stack (app under uvicorn,
the suite's broker and Valkey, the real updater crediting purchases).

Shoppers buy more from lists with more of what they want, so the arm that ranks by
relevance is truly better than one that reranks its nearest 1,000 for pure diversity
(lambda 0, 2,000 customers, 20 s at 80 events/s). Each shown item of the wanted group
tempts with probability 0.3: at 0.6 both arms' lists mostly hold one tempting item
and the differences were -0.04 to -0.12 (z 1.8-5.2; once undecided); at 0.3 they were
-0.20 to -0.26 (z 8-11; at 0.15 z 7-8), and the run's report must say so. That holds while
customers' vectors reflect the tastes the generator gave them, so the run gets a model
of its own (own Redis database, data directory and events topic): what other tests'
purchases did to the shared vectors cannot blur it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pyspark.sql import SparkSession
from rich.console import Console

from batch.generate import generate
from batch.pipeline import run_batch
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from serve.app import create_app
from simulator.config import SimulationConfig
from simulator.report import report_table
from simulator.run import simulate
from support import isolated, new_topic, running_updater, serving


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Customers enough that each arm holds a thousand of them: the report's interval
    counts impressions as independent, so with the suite's 400 customers (heavy buyers
    seen again and again) the arms' difference moved from -0.16 to +0.03 between runs."""
    out = tmp_path_factory.mktemp("experiment-input")
    generate(out, customers=2_000, articles=300, transactions=40_000, seed=11)
    return out


@pytest.fixture(scope="module")
def pristine(
    settings: Settings, shop: Path, spark: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, redis.Redis]]:  # fmt: skip
    """A freshly trained model on the suite's engines, touched by no other test."""
    data_dir = tmp_path_factory.mktemp("experiment") / "data"
    with isolated(settings, data_dir, db=15) as (own, client):
        own = own.model_copy(update={"events_topic": new_topic(own)})
        with Steps(enabled=False) as steps:
            run_batch(own, shop, RedisUserStore(client), steps, spark)
        yield own, client


def test_an_experiment_whose_arm_is_truly_better_is_found(
    shop: Path, pristine: tuple[Settings, redis.Redis], tmp_path: Path
) -> None:
    settings, redis_conn = pristine
    name = f"sim-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "experiments.yaml"
    path.write_text(
        f"experiments:\n  - name: {name}\n    variants:\n"
        "      - {name: relevant, share: 0.5, diversity_lambda: 1.0}\n"
        "      - {name: diverse, share: 0.5, diversity_lambda: 0.0, candidate_pool: 1000}\n"
    )
    with_experiment = settings.model_copy(update={"experiments_file": path})
    app = create_app(with_experiment)
    with running_updater(with_experiment, redis_conn), serving(app) as url:
        report = simulate(
            SimulationConfig(
                input_dir=shop,
                api_url=url,
                rate_per_s=80,
                duration_s=20.0,
                views_per_session=(1, 1),
                think_time_s=0.0,
                purchase_probability=1.0,
                follow_recommendations=0.3,
                popular_share=0.0,
                filter_share=0.0,
                bad_request_share=0.0,
                new_customer_share=0.0,
                drift_fraction=0.0,
                freshness_every=0,
                experiment=name,
                seed=3,
            )
        )
    Console(width=150).print(report_table(report))
    assert report.error_count == 0
    result = report.experiment
    assert result is not None and result["experiment"] == name
    relevant, diverse = result["variants"]
    assert relevant["impressions"] > 150 and diverse["impressions"] > 150
    # Every list the run was shown is counted, in one arm or the other.
    shown = report.status_counts["recommend"].get("2xx", 0)
    assert relevant["impressions"] + diverse["impressions"] == shown
    assert diverse["difference"] < 0 and diverse["difference_interval"]["upper"] < 0
    assert diverse["p_value"] < 0.05  # the report's own level (winner needs it too)
    assert result["winner"] == "relevant"
