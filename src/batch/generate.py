"""A seeded generator of H&M-schema CSVs with hidden structure: taste clusters,
popularity skew, repeat buys and drift over time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from batch.hm_schema import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CUSTOMERS_FILE,
    CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE,
    TRANSACTIONS_SCHEMA,
)

# product group -> its product types (names as in the real catalogue)
PRODUCT_GROUPS: dict[str, tuple[str, ...]] = {
    "Garment Upper body": ("Sweater", "T-shirt", "Blouse", "Top", "Shirt", "Hoodie", "Cardigan"),
    "Garment Lower body": ("Trousers", "Shorts", "Skirt", "Leggings/Tights"),
    "Garment Full body": ("Dress", "Jumpsuit/Playsuit", "Dungarees"),
    "Accessories": ("Bag", "Hat/beanie", "Earring", "Scarf", "Belt", "Sunglasses"),
    "Underwear": ("Bra", "Underwear bottom", "Underwear body", "Socks"),
    "Shoes": ("Sneakers", "Boots", "Sandals", "Ballerinas"),
    "Swimwear": ("Swimwear bottom", "Bikini top", "Swimsuit"),
    "Socks & Tights": ("Socks", "Leggings/Tights", "Underwear Tights"),
    "Nightwear": ("Pyjama set", "Pyjama jumpsuit/playsuit", "Night gown"),
}
INDEX_GROUPS = ("Ladieswear", "Menswear", "Baby/Children", "Sport", "Divided")
INDEX_CODES = ("A", "F", "H", "S", "D")
COLOURS = (
    "Black", "White", "Dark Blue", "Light Pink", "Grey", "Beige", "Red", "Light Blue",
    "Dark Green", "Yellow", "Off White", "Dark Red",
)  # fmt: skip
COLOUR_MASTERS = ("Black", "White", "Blue", "Pink", "Grey", "Beige", "Red", "Blue",
                  "Green", "Yellow", "White", "Red")  # fmt: skip
APPEARANCES = ("Solid", "Stripe", "All over pattern", "Melange", "Denim", "Check")
VALUES = ("Dark", "Light", "Dusty Light", "Medium", "Bright")
GARMENT_GROUPS = ("Jersey Basic", "Knitwear", "Trousers", "Accessories", "Under-, Nightwear",
                  "Shoes", "Swimwear", "Dresses Ladies", "Blouses", "Socks and Tights")  # fmt: skip

CHUNK = 1_000_000
SHARE_OWN, SHARE_SECOND = 0.72, 0.13  # the rest follows global popularity
REPEAT_SAME_DAY = 0.03
DRIFTING_CUSTOMERS = 0.2


@dataclass(frozen=True)
class GeneratedData:
    out_dir: Path
    customers: int
    articles: int
    transactions: int
    clusters: int


def _hex_ids(rng: np.random.Generator, n: int) -> npt.NDArray[np.str_]:
    raw = np.frombuffer(rng.bytes(32 * n), dtype=np.uint8).reshape(n, 32)
    return np.array([row.tobytes().hex() for row in raw])


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> npt.NDArray[np.int64]:
    return rng.integers(0, len(options), size=n)


def _articles(rng: np.random.Generator, n: int, k: int) -> tuple[pa.Table, npt.NDArray[np.int64]]:
    groups = list(PRODUCT_GROUPS)
    cluster = rng.permutation(np.arange(n) % k)
    # Each cluster has a home product group, index group and two colours: a visible taste.
    home_group = np.arange(k) % len(groups)
    home_index = np.arange(k) % len(INDEX_GROUPS)
    home_colours = rng.integers(0, len(COLOURS), size=(k, 2))
    group = np.where(
        rng.random(n) < 0.85, home_group[cluster], rng.integers(0, len(groups), size=n)
    )
    index = np.where(
        rng.random(n) < 0.8, home_index[cluster], rng.integers(0, len(INDEX_GROUPS), size=n)
    )
    colour = np.where(
        rng.random(n) < 0.6,
        home_colours[cluster, rng.integers(0, 2, size=n)],
        rng.integers(0, len(COLOURS), size=n),
    )
    type_pick = rng.random(n)
    product_type = [
        PRODUCT_GROUPS[groups[g]][int(u * len(PRODUCT_GROUPS[groups[g]]))]
        for g, u in zip(group, type_pick, strict=True)
    ]
    all_types = sorted({t for types in PRODUCT_GROUPS.values() for t in types})
    type_no = {t: 250 + i for i, t in enumerate(all_types)}
    appearance = _pick(rng, APPEARANCES, n)
    value = _pick(rng, VALUES, n)
    garment = group % len(GARMENT_GROUPS)
    # Colour variants of one product share a product code, as in the real catalogue.
    product_code = 108_775 + np.arange(n) // 2
    variant = np.arange(n) % 2 + 1
    article_id = [f"0{p:06d}{v:03d}" for p, v in zip(product_code, variant, strict=True)]
    group_name = np.array(groups)[group]
    index_name = np.array(INDEX_GROUPS)[index]
    colour_name = np.array(COLOURS)[colour]
    prod_name = [
        f"{c} {t} {i % 97}" for c, t, i in zip(colour_name, product_type, range(n), strict=True)
    ]
    section = group * len(INDEX_GROUPS) + index
    columns = {
        "article_id": article_id,
        "product_code": product_code,
        "prod_name": prod_name,
        "product_type_no": [type_no[t] for t in product_type],
        "product_type_name": product_type,
        "product_group_name": group_name,
        "graphical_appearance_no": 1_010_001 + appearance,
        "graphical_appearance_name": np.array(APPEARANCES)[appearance],
        "colour_group_code": 9 + colour,
        "colour_group_name": colour_name,
        "perceived_colour_value_id": 1 + value,
        "perceived_colour_value_name": np.array(VALUES)[value],
        "perceived_colour_master_id": 5 + colour,
        "perceived_colour_master_name": np.array(COLOUR_MASTERS)[colour],
        "department_no": 1_000 + group * 10 + index,
        "department_name": [f"{g} {i}" for g, i in zip(group_name, index_name, strict=True)],
        "index_code": np.array(INDEX_CODES)[index],
        "index_name": index_name,
        "index_group_no": 1 + index,
        "index_group_name": index_name,
        "section_no": 10 + section,
        "section_name": [f"{i} {g}" for g, i in zip(group_name, index_name, strict=True)],
        "garment_group_no": 1_001 + garment,
        "garment_group_name": np.array(GARMENT_GROUPS)[garment],
        "detail_desc": [
            f"{t} in {c.lower()} from our {i} collection."
            for t, c, i in zip(product_type, colour_name, index_name, strict=True)
        ],
    }
    return pa.table(columns, schema=ARTICLES_SCHEMA), cluster


def _customers(rng: np.random.Generator, n: int) -> pa.Table:
    def maybe_one(p: float) -> pa.Array:
        present = rng.random(n) < p
        return pa.array(np.ones(n), mask=~present)

    status = np.array(["ACTIVE", "PRE-CREATE", "LEFT CLUB"])[
        rng.choice(3, size=n, p=[0.93, 0.06, 0.01])
    ]
    news = np.array(["NONE", "Regularly", "Monthly"])[rng.choice(3, size=n, p=[0.64, 0.35, 0.01])]
    ages = np.clip(np.round(rng.gamma(4.0, 8.0, size=n) + 16), 16, 99)
    return pa.table(
        {
            "customer_id": _hex_ids(rng, n),
            "FN": maybe_one(0.35),
            "Active": maybe_one(0.34),
            "club_member_status": pa.array(status, mask=rng.random(n) < 0.005),
            "fashion_news_frequency": pa.array(news, mask=rng.random(n) < 0.01),
            "age": pa.array(ages, mask=rng.random(n) < 0.01),
            "postal_code": _hex_ids(rng, n),
        },
        schema=CUSTOMERS_SCHEMA,
    )


def _cdfs(
    weights: npt.NDArray[np.float64], cluster: npt.NDArray[np.int64], k: int
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    out = []
    for c in range(k):
        members = np.flatnonzero(cluster == c)
        cdf = np.cumsum(weights[members])
        out.append((members, cdf / cdf[-1]))
    return out


def _sample_in(
    rng: np.random.Generator,
    table: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
    n: int,
) -> npt.NDArray[np.int64]:
    members, cdf = table
    picks = np.searchsorted(cdf, rng.random(n), side="right")
    return members[np.minimum(picks, len(members) - 1)]


def generate(
    out_dir: Path,
    *,
    customers: int = 2_000,
    articles: int = 1_000,
    transactions: int = 50_000,
    seed: int = 42,
    clusters: int | None = None,
    start: date = date(2018, 9, 20),
    days: int = 733,
    progress: Callable[[str], None] | None = None,
) -> GeneratedData:
    """Write articles.csv, customers.csv and transactions_train.csv to out_dir."""
    k = clusters if clusters is not None else max(2, min(len(PRODUCT_GROUPS), articles // 25))
    if customers < 1 or articles < 1 or transactions < 1 or days < 1:
        raise ValueError("customers, articles, transactions and days must all be positive")
    if k < 1 or articles < k * 2:
        raise ValueError(
            f"need at least two articles per cluster ({k} clusters, {articles} articles)"
        )
    if articles > 1_780_000:
        raise ValueError("at most 1,780,000 articles fit the 10-digit article_id scheme")
    say = progress or (lambda _msg: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    say("articles")
    article_table, cluster = _articles(rng, articles, k)
    pacsv.write_csv(article_table, out_dir / ARTICLES_FILE)
    say("customers")
    customer_table = _customers(rng, customers)
    pacsv.write_csv(customer_table, out_dir / CUSTOMERS_FILE)

    # Popularity: a power law within each cluster; activity: a few customers buy a lot.
    popularity = (1.0 / (rng.permutation(articles) + 1.0) ** 1.1).astype(np.float64)
    in_cluster = _cdfs(popularity, cluster, k)
    global_cdf = (np.arange(articles), np.cumsum(popularity) / popularity.sum())
    activity = rng.lognormal(0.0, 1.2, size=customers)
    activity_cdf = np.cumsum(activity) / activity.sum()
    main = rng.integers(0, k, size=customers)
    second = (main + rng.integers(1, max(2, k), size=customers)) % k
    drifts = rng.random(customers) < DRIFTING_CUSTOMERS
    drift_to = (main + rng.integers(1, max(2, k), size=customers)) % k
    drift_day = rng.integers(days // 2, days, size=customers)
    base_price = np.round(rng.lognormal(np.log(0.025), 0.5, size=articles), 4)
    customer_ids = customer_table.column("customer_id").to_numpy(zero_copy_only=False)
    article_ids = article_table.column("article_id").to_numpy(zero_copy_only=False)
    day_zero = np.datetime64(start.isoformat(), "D")

    say("transactions")
    chunks: list[pa.Table] = []
    for offset in range(0, transactions, CHUNK):
        n = min(CHUNK, transactions - offset)
        who = np.minimum(np.searchsorted(activity_cdf, rng.random(n)), customers - 1)
        # Later days sell more, as a growing shop does.
        day = np.minimum((np.sqrt(rng.random(n)) * days).astype(np.int64), days - 1)
        own = np.where(drifts[who] & (day >= drift_day[who]), drift_to[who], main[who])
        roll = rng.random(n)
        taste = np.where(roll < SHARE_OWN, own, second[who])
        what = np.empty(n, dtype=np.int64)
        from_global = roll >= SHARE_OWN + SHARE_SECOND
        what[from_global] = _sample_in(rng, global_cdf, int(from_global.sum()))
        for c in range(k):
            rows = np.flatnonzero(~from_global & (taste == c))
            what[rows] = _sample_in(rng, in_cluster[c], len(rows))
        # Several units of one article on one day: the real data has them too.
        repeat = np.flatnonzero(rng.random(n) < REPEAT_SAME_DAY)
        repeat = repeat[repeat > 0]
        who[repeat], what[repeat], day[repeat] = who[repeat - 1], what[repeat - 1], day[repeat - 1]
        order = np.argsort(day, kind="stable")
        who, what, day = who[order], what[order], day[order]
        price = np.round(base_price[what] * rng.uniform(0.9, 1.1, size=n), 6)
        chunks.append(
            pa.table(
                {
                    "t_dat": (day_zero + day).astype(str),
                    "customer_id": customer_ids[who],
                    "article_id": article_ids[what],
                    "price": price,
                    "sales_channel_id": np.where(rng.random(n) < 0.7, 2, 1),
                },
                schema=TRANSACTIONS_SCHEMA,
            )
        )
    pacsv.write_csv(pa.concat_tables(chunks), out_dir / TRANSACTIONS_FILE)
    return GeneratedData(out_dir, customers, articles, transactions, k)
