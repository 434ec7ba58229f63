"""The simulated population: skewed like the data it comes from, tastes from purchase
history, and a drift plan that is the same for the same seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.hm_schema import ARTICLES_FILE, TRANSACTIONS_FILE
from simulator.population import (
    MIN_DRIFT_GROUP_ARTICLES,
    Population,
    PopulationError,
    build_population,
    load_population,
)


@pytest.fixture(scope="module")
def population(input_dir: Path) -> Population:
    return load_population(input_dir, seed=3, drift_fraction=0.2)


def _top_share(counts: Counter[int], population_size: int, top: float = 0.1) -> float:
    ranked = sorted(counts.values(), reverse=True)
    return sum(ranked[: max(1, int(top * population_size))]) / sum(ranked)


def test_customer_activity_and_article_sales_are_skewed(population: Population) -> None:
    rng = np.random.default_rng(0)
    customers = Counter(population.draw_customer(rng) for _ in range(20_000))
    # A tenth of the customers make far more than a tenth of the sessions.
    assert _top_share(customers, len(population.customer_ids)) > 0.3
    catalogue = population.catalogue
    group = int(np.argmax([len(m) for m in catalogue.members]))
    articles = Counter(catalogue.draw(rng, group) for _ in range(20_000))
    assert set(articles) <= set(catalogue.members[group].tolist())
    assert _top_share(articles, len(catalogue.members[group])) > 0.25


def test_draws_follow_the_history(population: Population, input_dir: Path) -> None:
    tx = pd.read_csv(input_dir / TRANSACTIONS_FILE, dtype=str)
    most = tx["customer_id"].value_counts().index[0]
    row = population.customer_ids.index(most)
    assert population.activity[row] == population.activity.max()
    rng = np.random.default_rng(1)
    draws = Counter(population.draw_customer(rng) for _ in range(50_000))
    expected = population.activity[row] / population.activity.sum()
    assert draws[row] / 50_000 == pytest.approx(expected, rel=0.15)


def test_taste_is_the_smoothed_group_history(population: Population, input_dir: Path) -> None:
    tx = pd.read_csv(input_dir / TRANSACTIONS_FILE, dtype=str)
    arts = pd.read_csv(input_dir / ARTICLES_FILE, dtype=str)
    row = int(np.argmax(population.activity))
    customer = population.customer_ids[row]
    bought = tx[tx["customer_id"] == customer].merge(arts, on="article_id")
    favourite = bought["product_group_name"].value_counts().index[0]
    taste = population.taste(row)
    assert taste.sum() == pytest.approx(1.0)
    assert (taste > 0).all()  # smoothed: every group stays possible
    assert population.catalogue.groups[int(np.argmax(taste))] == favourite
    assert population.catalogue.groups[population.top_group(row)] == favourite
    assert population.taste(None) == pytest.approx(population.catalogue.shares)


def test_drift_plan_is_deterministic_by_seed(input_dir: Path) -> None:
    one = load_population(input_dir, seed=3, drift_fraction=0.2)
    two = load_population(input_dir, seed=3, drift_fraction=0.2)
    other = load_population(input_dir, seed=4, drift_fraction=0.2)
    assert one.drift.customers.tolist() == two.drift.customers.tolist()
    assert one.drift.groups.tolist() == two.drift.groups.tolist()
    assert one.drift.customers.tolist() != other.drift.customers.tolist()
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert [one.draw_customer(rng_a) for _ in range(100)] == [
        two.draw_customer(rng_b) for _ in range(100)
    ]


def test_drifted_customers_go_to_a_group_they_bought_least(population: Population) -> None:
    plan = population.drift
    assert len(plan.customers) == round(0.2 * len(population.customer_ids))
    assert len(set(plan.customers.tolist())) == len(plan.customers)
    sizes = np.array([len(m) for m in population.catalogue.members])
    eligible = sizes >= MIN_DRIFT_GROUP_ARTICLES
    for row, group in zip(plan.customers.tolist(), plan.groups.tolist(), strict=True):
        counts = population.group_counts[row]
        assert eligible[group]
        assert counts[group] == counts[eligible].min()
        assert group != population.top_group(row)
        assert plan.target[row] == group
    # Ties are broken at random, so the plan spreads over the least-bought groups.
    assert len(set(plan.groups.tolist())) > 1


def test_no_drift_when_the_fraction_is_zero(input_dir: Path) -> None:
    assert len(load_population(input_dir, seed=3, drift_fraction=0.0).drift.customers) == 0


def test_ids_new_customers_and_articles_from_the_files() -> None:
    articles = pd.DataFrame(
        {
            "article_id": ["0100000001", "0100000002", "0100000003", "0100000004"],
            "product_group_name": ["Shoes", "Shoes", "Accessories", None],
        }
    )
    transactions = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "bad id!", "c"],
            "article_id": ["0100000001", "0100000001", "0100000003", "0100000002",
                           "0100000001", "0999999999"],
            "price": ["0.05", "0.07", "0.01", None, "0.02", "0.03"],
        }
    )  # fmt: skip
    customers = pd.DataFrame({"customer_id": ["a", "b", "c", "d", "x" * 129]})
    pop = build_population(articles, transactions, customers, seed=1, drift_fraction=0.5)
    # Invalid ids and unknown articles are dropped; leading zeros stay.
    assert pop.customer_ids == ("a", "b")
    assert pop.catalogue.article_ids == ("0100000001", "0100000002", "0100000003")
    assert pop.catalogue.groups == ("Accessories", "Shoes")
    assert pop.activity.tolist() == [3.0, 1.0]
    assert pop.group_counts.tolist() == [[1, 2], [0, 1]]
    assert pop.catalogue.sales.tolist() == [2.0, 1.0, 1.0]
    assert pop.catalogue.price[0] == pytest.approx(0.06)
    assert np.isnan(pop.catalogue.price[1])
    # c bought only an unknown article: for the simulation it is new, as is d.
    assert pop.new_customers == ("c", "d")
    assert len(pop.drift.customers) == 1


def test_missing_files_and_columns_are_named(tmp_path: Path, input_dir: Path) -> None:
    with pytest.raises(PopulationError, match=r"missing input file: .*articles\.csv"):
        load_population(tmp_path, seed=1, drift_fraction=0.2)
    for name in ("articles.csv", "customers.csv"):
        (tmp_path / name).write_bytes((input_dir / name).read_bytes())
    (tmp_path / TRANSACTIONS_FILE).write_text("t_dat,customer_id\n2020-01-01,a\n")
    with pytest.raises(PopulationError, match=r"transactions_train.csv: .*article_id"):
        load_population(tmp_path, seed=1, drift_fraction=0.2)
