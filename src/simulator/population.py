"""Who shops and what they buy, from the CSVs the model was trained on: customers weighted
by how much they bought, their taste over product groups, articles weighted by sales,
and the drift plan. The same files and seed always give the same population."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from recsys.hm_schema import ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE
from recsys.ids import is_valid_id
from simulator.config import SimulatorError

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# A customer's taste is their product-group counts plus this many purchases' worth of the
# overall group shares, so one purchase does not make a taste of 100%.
TASTE_PRIOR: Final = 2.0
# A drift target needs a few articles to buy, or every drifted purchase is one article.
MIN_DRIFT_GROUP_ARTICLES: Final = 5


class PopulationError(SimulatorError, ValueError):
    """The input folder cannot give a population (missing file or column, no sales)."""


@dataclass(frozen=True)
class Catalogue:
    """The articles that sold at least once (so the live model has their vectors)."""

    article_ids: tuple[str, ...]
    groups: tuple[str, ...]  # product_group_name values
    group_of: Ints  # per article
    sales: Floats  # per article: purchases in the history
    price: Floats  # per article: median price paid, NaN where none was given
    members: tuple[Ints, ...]  # per group: its articles, best-selling first
    cumulative: tuple[Floats, ...]  # per group: running sum of its members' sales
    shares: Floats  # per group: its share of all sales

    def draw(self, rng: np.random.Generator, group: int) -> int:
        """An article of the group, in proportion to its sales (the power law of the data)."""
        cum = self.cumulative[group]
        at = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        return int(self.members[group][min(at, len(cum) - 1)])


@dataclass(frozen=True)
class DriftPlan:
    """Customers (row numbers) whose taste switches to a group they bought least."""

    customers: Ints
    groups: Ints  # their new product group, per customer above
    target: dict[int, int] = field(repr=False, compare=False)

    @classmethod
    def of(cls, customers: Ints, groups: Ints) -> DriftPlan:
        return cls(customers, groups, dict(zip(customers.tolist(), groups.tolist(), strict=True)))


@dataclass(frozen=True)
class Population:
    customer_ids: tuple[str, ...]  # customers with a purchase history
    activity: Floats  # per customer: purchases in the history (their share of sessions)
    group_counts: npt.NDArray[np.int32]  # customers x groups: purchases per product group
    new_customers: tuple[str, ...]  # in customers.csv, never in the transactions
    catalogue: Catalogue
    drift: DriftPlan
    cumulative_activity: Floats = field(repr=False, compare=False)

    def draw_customer(self, rng: np.random.Generator) -> int:
        """A known customer, in proportion to how much they bought."""
        cum = self.cumulative_activity
        at = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        return min(at, len(cum) - 1)

    def taste(self, customer: int | None) -> Floats:
        """Product-group shares of a customer, smoothed; the overall shares for a new one."""
        overall = self.catalogue.shares
        if customer is None:
            return overall
        counts = self.group_counts[customer].astype(np.float64)
        taste: Floats = (counts + TASTE_PRIOR * overall) / (counts.sum() + TASTE_PRIOR)
        return taste

    def top_group(self, customer: int) -> int:
        return int(np.argmax(self.group_counts[customer]))


def load_population(input_dir: Path, *, seed: int, drift_fraction: float) -> Population:
    """Read the three CSVs (ids as text) and derive the population; raises PopulationError
    naming what is missing."""
    articles = _read(input_dir / ARTICLES_FILE, ["article_id", "product_group_name"])
    sales = _read(input_dir / TRANSACTIONS_FILE, ["customer_id", "article_id", "price"])
    customers = _read(input_dir / CUSTOMERS_FILE, ["customer_id"])
    return build_population(articles, sales, customers, seed=seed, drift_fraction=drift_fraction)


def build_population(
    articles: pd.DataFrame,
    transactions: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    seed: int,
    drift_fraction: float,
) -> Population:
    """The population of these frames (ids as text or categories)."""
    articles = articles[articles["article_id"].map(_valid_id)].drop_duplicates("article_id")
    tx = transactions[
        transactions["customer_id"].map(_valid_id)
        & transactions["article_id"].isin(articles["article_id"])
    ]
    if tx.empty:
        raise PopulationError("no transaction names a known article and a valid customer id")

    sold = tx["article_id"].value_counts()
    sold = sold[sold > 0]
    sold.index = sold.index.astype(str)
    sold = sold.sort_index()  # a fixed order, whatever the file's
    article_ids = [str(a) for a in sold.index]
    names = articles["product_group_name"].astype(object).fillna("").astype(str).to_numpy()
    group_by_article = dict(zip(articles["article_id"].astype(str), names, strict=True))
    groups = tuple(sorted({group_by_article[a] for a in article_ids}))
    group_index = {g: i for i, g in enumerate(groups)}
    group_of = np.array([group_index[group_by_article[a]] for a in article_ids], np.int64)
    row_of_tx = pd.Categorical(tx["article_id"], categories=article_ids).codes
    price = pd.to_numeric(tx["price"], errors="coerce").to_numpy(np.float64)
    medians = pd.Series(price).groupby(row_of_tx).median()
    catalogue = _catalogue(
        tuple(article_ids),
        groups,
        group_of,
        np.asarray(sold.to_numpy(), dtype=np.float64),
        medians.reindex(range(len(article_ids))).to_numpy(np.float64),
    )

    customer_codes, customer_index = pd.factorize(tx["customer_id"], sort=True)
    customer_ids = tuple(str(c) for c in customer_index)
    n_customers, n_groups = len(customer_ids), len(groups)
    flat = np.bincount(
        customer_codes * n_groups + group_of[row_of_tx], minlength=n_customers * n_groups
    )
    group_counts = flat.reshape(n_customers, n_groups).astype(np.int32)
    activity = group_counts.sum(axis=1).astype(np.float64)

    known = set(customer_ids)
    listed = (str(c) for c in customers["customer_id"].dropna().unique())
    new_customers = tuple(sorted(c for c in listed if _valid_id(c) and c not in known))
    drift = plan_drift(group_counts, catalogue, np.random.default_rng([seed, 0]), drift_fraction)
    return Population(
        customer_ids,
        activity,
        group_counts,
        new_customers,
        catalogue,
        drift,
        np.cumsum(activity),
    )


def plan_drift(
    group_counts: npt.NDArray[np.int32],
    catalogue: Catalogue,
    rng: np.random.Generator,
    fraction: float,
) -> DriftPlan:
    """A random `fraction` of the customers, each to the product group they bought least
    (ties drawn at random) among groups with enough articles to buy."""
    n_customers = group_counts.shape[0]
    chosen = np.sort(rng.choice(n_customers, size=round(fraction * n_customers), replace=False))
    sizes = np.array([len(m) for m in catalogue.members])
    eligible = sizes >= MIN_DRIFT_GROUP_ARTICLES
    if not eligible.any():
        eligible = sizes > 0
    counts = group_counts[chosen].astype(np.float64)
    counts[:, ~eligible] = np.inf
    # Random tie-breaks below 1 never reorder different counts.
    keys = counts + rng.random(counts.shape)
    return DriftPlan.of(chosen.astype(np.int64), np.argmin(keys, axis=1).astype(np.int64))


def _catalogue(
    article_ids: tuple[str, ...],
    groups: tuple[str, ...],
    group_of: Ints,
    sales: Floats,
    price: Floats,
) -> Catalogue:
    members = []
    cumulative = []
    for g in range(len(groups)):
        mine = np.flatnonzero(group_of == g)
        mine = mine[np.argsort(-sales[mine], kind="stable")]
        members.append(mine.astype(np.int64))
        cumulative.append(np.cumsum(sales[mine]))
    shares = np.bincount(group_of, sales, len(groups)).astype(np.float64)
    return Catalogue(
        article_ids,
        groups,
        group_of,
        sales,
        price,
        tuple(members),
        tuple(cumulative),
        shares / shares.sum(),
    )


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise PopulationError(f"missing input file: {path}")
    # Ids stay text (article ids keep their leading zeros); as categories, 30M transaction
    # rows hold one copy of each distinct id.
    dtypes = {c: "float64" if c == "price" else "category" for c in columns}
    try:
        return pd.read_csv(path, usecols=columns, dtype=dtypes)
    except ValueError as exc:
        raise PopulationError(f"{path.name}: {exc}") from exc


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and is_valid_id(value)
