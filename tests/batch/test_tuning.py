"""The batch's search (batch.tuning) on data planted for it: two half-lives, and each
planted shop has one that is truly better on the validation split; the search must pick
it, and the batch must train with it and record the choice in the manifest."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from batch.holdout import HoldoutConfig
from batch.lake import DeltaRsLake
from batch.online_update import MIN_EVENTS
from batch.param_search import LogRange
from batch.pipeline import run_batch
from batch.tuning import TuningError, sampled, search_space, tune
from recsys import keys
from recsys.hm_schema import ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE
from recsys.model_store import read_manifest
from recsys.online_update import OnlineUpdate
from recsys.progress import Steps
from recsys.settings import Settings
from recsys.user_store import RedisUserStore
from support import isolated

GROUPS, ARTICLES_PER_GROUP, CUSTOMERS = 4, 15, 240
START = date(2020, 1, 1)
# Two settings that differ in the half-life alone (0: no decay).
TWO_HALF_LIVES = {
    "implicit_factors": [8.0],
    "implicit_iterations": [15.0],
    "implicit_regularization": [0.1],
    "implicit_alpha": [10.0],
    "implicit_regularization_exponent": [0.0],
    "interaction_half_life_days": [0.0, 14.0],
}


def planted(
    articles: list[str], customers: list[str], phases: list[tuple[str, int, int, int]]
) -> pd.DataFrame:
    """Purchases of CUSTOMERS customers, each with two product groups a and b (pairs
    shared by many customers): per phase (group, purchases, first day, last day)."""
    rng = np.random.default_rng(5)
    groups = [
        articles[g * ARTICLES_PER_GROUP : (g + 1) * ARTICLES_PER_GROUP] for g in range(GROUPS)
    ]
    rows = []
    for c, customer in enumerate(customers[:CUSTOMERS]):
        a = c % GROUPS
        pair = {"a": a, "b": (a + 1 + (c // GROUPS) % (GROUPS - 1)) % GROUPS}
        for group, n, first, last in phases:
            items = rng.choice(groups[pair[group]], size=n, replace=False)
            days = np.sort(rng.integers(first, last + 1, size=n))
            rows += [
                (START + timedelta(days=int(d)), customer, item, 0.01, 2)
                for d, item in zip(days, items, strict=True)
            ]
    return pd.DataFrame(
        rows, columns=["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]
    )


# Tastes that moved: the last purchases (the held-out ones) are of the new group, and a
# short half-life lets the two recent ones in training outweigh eight old ones.
MOVED = [("a", 8, 0, 360), ("b", 8, 600, 720)]
# Tastes that came back: a short detour to the other group, then the old one again; a
# short half-life follows the detour, no decay remembers the eight.
CAME_BACK = [("a", 8, 0, 500), ("b", 2, 520, 560), ("a", 6, 600, 720)]


def shop_ids(input_dir: Path) -> tuple[list[str], list[str]]:
    """Articles and customers of the suite's generated shop, for the planted purchases."""
    articles = pd.read_csv(input_dir / ARTICLES_FILE, dtype=str)["article_id"]
    customers = pd.read_csv(input_dir / CUSTOMERS_FILE, dtype=str)["customer_id"]
    return sorted(articles)[: GROUPS * ARTICLES_PER_GROUP], sorted(customers)


@pytest.mark.parametrize(("phases", "better"), [(MOVED, 14.0), (CAME_BACK, 0.0)],
                         ids=["moved", "came-back"])  # fmt: skip
def test_the_search_picks_the_planted_better_half_life(
    phases: list[tuple[str, int, int, int]],
    better: float,
    input_dir: Path,
    spark: SparkSession,
    settings: Settings,
    tmp_path: Path,
) -> None:
    purchases = planted(*shop_ids(input_dir), phases)
    lake = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    own = settings.model_copy(
        update={"tuning_space": TWO_HALF_LIVES, "interaction_half_life_days": 14.0 - better}
    )
    tuned = tune(
        lake, spark, spark.createDataFrame(purchases), len(purchases), own, HoldoutConfig()
    )
    assert tuned is not None
    record = tuned.record
    assert record.chosen["interaction_half_life_days"] == better
    assert tuned.settings.interaction_half_life_days == better
    assert tuned.settings.implicit_factors == 8 and isinstance(tuned.settings.implicit_factors, int)
    # Both settings tried (a grid of two), best first, and clearly apart.
    assert sorted(t.params["interaction_half_life_days"] for t in record.trials) == [0.0, 14.0]
    best, worst = record.trials
    assert best.params["interaction_half_life_days"] == better
    assert best.validation_ndcg > worst.validation_ndcg + 0.1
    assert "holdout's training part" in record.protocol


def test_the_batch_trains_with_the_choice_and_records_it(
    input_dir: Path, spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    shop = tmp_path / "input"
    shop.mkdir()
    for name in (ARTICLES_FILE, CUSTOMERS_FILE):
        (shop / name).write_bytes((input_dir / name).read_bytes())
    purchases = planted(*shop_ids(input_dir), MOVED)
    purchases.to_csv(shop / TRANSACTIONS_FILE, index=False)
    with isolated(settings, tmp_path / "data", db=14) as (own, client):
        own = own.model_copy(
            update={
                "tuning": True,
                "tuning_space": TWO_HALF_LIVES,
                "interaction_half_life_days": 0.0,
                # The batch's other choice, the online update, recorded alike.
                "online_update": "auto",
            }
        )
        with Steps(enabled=False) as steps:
            report = run_batch(own, shop, RedisUserStore(client), steps, spark)
        manifest = read_manifest(own.models_dir, report.version)
        raw = client.hgetall(keys.model_meta(report.version))
        meta = {k.decode(): v.decode() for k, v in raw.items()}
    assert manifest.tuning is not None
    assert manifest.tuning.chosen["interaction_half_life_days"] == 14.0
    assert len(manifest.tuning.trials) == 2
    assert manifest.params["factors"] == 8  # the trainer was made from the chosen values
    assert "tune on a validation split" in report.step_seconds
    update = manifest.online_update
    assert update is not None and update.chosen is not None and update.events >= MIN_EVENTS
    assert update.hit_rates[update.chosen] == max(update.hit_rates.values())
    served = OnlineUpdate.from_meta(meta)
    assert served is not None and served.name == update.chosen
    assert "choose the online update on the holdout" in report.step_seconds


def test_the_space_takes_the_settings_choices_and_the_current_values(settings: Settings) -> None:
    own = settings.model_copy(
        update={
            "implicit_factors": 48,
            "implicit_alpha": 500.0,
            "tuning_space": {"interaction_half_life_days": [0.0, 7.0]},
        }
    )
    space = search_space(own)
    half_life, factors, alpha = (
        space[k] for k in ("interaction_half_life_days", "implicit_factors", "implicit_alpha")
    )
    assert half_life == (0.0, 7.0)  # as the setting says
    assert factors == (48.0, 16, 32, 64, 128)  # the current value first
    assert alpha == LogRange(1.0, 500.0)  # widened to hold it
    # Regularisation is searched per unit of alpha: 1 / 500 widens the ratio's range.
    assert space["implicit_regularization"] == LogRange(0.001, 10.0, per="implicit_alpha")
    lower = search_space(own.model_copy(update={"implicit_regularization": 0.25}))
    assert lower["implicit_regularization"] == LogRange(0.0005, 10.0, per="implicit_alpha")
    spark_only = settings.model_copy(update={"tuning_space": {"spark_als_rank": [8.0]}})
    with pytest.raises(TuningError, match="spark_als_rank is not a parameter of the implicit"):
        search_space(spark_only)


def test_a_setting_that_is_not_tunable_is_refused() -> None:
    with pytest.raises(ValueError, match="'redis_url' is not tunable"):
        Settings(_env_file=None, tuning_space={"redis_url": [1.0]})  # type: ignore[call-arg]
    parsed = Settings(_env_file=None, tuning_space='{"implicit_factors": [16, 32]}')  # type: ignore[call-arg,arg-type]
    assert parsed.tuning_space == {"implicit_factors": [16.0, 32.0]}


def test_past_the_sample_size_the_search_sees_whole_customers_of_a_seeded_sample(
    spark: SparkSession,
) -> None:
    rows = [
        (f"c{c}", f"a{(c * 7 + i) % 50}", date(2020, 1, 1)) for c in range(400) for i in range(10)
    ]
    purchases = spark.createDataFrame(rows, ["customer_id", "article_id", "t_dat"])
    assert sampled(purchases, 4_000, None, 7) is purchases
    assert sampled(purchases, 4_000, 4_000, 7) is purchases  # no more than asked: all of them
    sample = sampled(purchases, 4_000, 1_000, 7).toPandas()
    per_customer = sample.groupby("customer_id").size()
    assert (per_customer == 10).all()  # every purchase of a sampled customer
    assert 600 <= len(sample) <= 1_400  # about a quarter of the customers
    again = sampled(purchases, 4_000, 1_000, 7).toPandas()
    assert set(again["customer_id"]) == set(sample["customer_id"])  # seeded: the same
