"""A seeded, vectorised generator of H&M-schema CSVs with hidden structure: taste clusters
tied to the catalogue, power-law popularity, repeat buys, new launches and drift over time;
optionally the weak-signals file beside them (views, clicks, add-to-carts). Profiles
(PROFILES) make other shops from the same machinery: one whose tastes never move, one
whose customers rebuy what they bought, one with strong seasons."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from batch.weak_signals import SIGNAL_TYPES, WEAK_SIGNALS_FILE, WEAK_SIGNALS_SCHEMA
from recsys.hm_schema import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CUSTOMERS_FILE,
    CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE,
    TRANSACTIONS_SCHEMA,
)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Objects = npt.NDArray[np.object_]

# (product group, section label, typical price, its product types). A type is
# (name, product_type_no, garment group, worn by men); each group's first type is for men.
PRODUCT_GROUPS: Final = (
    ("Garment Upper body", "Tops", 17.0, (
        ("T-shirt", 255, "Jersey Basic", True), ("Sweater", 252, "Knitwear", True),
        ("Top", 254, "Jersey Fancy", False), ("Blouse", 258, "Blouses", False),
        ("Shirt", 259, "Shirts", True), ("Hoodie", 245, "Jersey Fancy", True),
        ("Cardigan", 267, "Knitwear", True), ("Jacket", 262, "Outdoor", True),
        ("Vest top", 253, "Jersey Basic", False),
    )),
    ("Garment Lower body", "Bottoms", 25.0, (
        ("Trousers", 272, "Trousers", True), ("Shorts", 274, "Shorts", True),
        ("Skirt", 275, "Skirt", False), ("Leggings/Tights", 273, "Jersey Basic", False),
    )),
    ("Garment Full body", "One-pieces", 30.0, (
        ("Garment Set", 270, "Jersey Fancy", True), ("Dress", 265, "Dresses Ladies", False),
        ("Jumpsuit/Playsuit", 291, "Dressed", False),
        ("Dungarees", 296, "Trousers Denim", True),
    )),
    ("Accessories", "Accessories", 10.0, (
        ("Bag", 66, "Accessories", True), ("Hat/beanie", 71, "Accessories", True),
        ("Earring", 72, "Accessories", False), ("Scarf", 80, "Accessories", True),
        ("Belt", 67, "Accessories", True), ("Sunglasses", 73, "Accessories", True),
        ("Hair clip", 77, "Accessories", False),
    )),
    ("Underwear", "Underwear", 12.0, (
        ("Underwear bottom", 286, "Under-, Nightwear", True),
        ("Bra", 306, "Under-, Nightwear", False),
        ("Underwear body", 283, "Under-, Nightwear", False),
    )),
    ("Shoes", "Shoes", 35.0, (
        ("Sneakers", 94, "Shoes", True), ("Boots", 88, "Shoes", True),
        ("Sandals", 89, "Shoes", True), ("Ballerinas", 87, "Shoes", False),
        ("Pumps", 90, "Shoes", False),
    )),
    ("Swimwear", "Swimwear, beachwear", 15.0, (
        ("Swimwear bottom", 59, "Swimwear", True), ("Bikini top", 298, "Swimwear", False),
        ("Swimsuit", 60, "Swimwear", False), ("Swimwear set", 61, "Swimwear", False),
    )),
    ("Nightwear", "Nightwear", 20.0, (
        ("Pyjama set", 308, "Under-, Nightwear", True),
        ("Pyjama bottom", 309, "Under-, Nightwear", True),
        ("Night gown", 305, "Under-, Nightwear", False),
        ("Pyjama jumpsuit/playsuit", 307, "Under-, Nightwear", False),
    )),
    ("Socks & Tights", "Socks & Tights", 6.0, (
        ("Socks", 302, "Socks and Tights", True),
        ("Underwear Tights", 304, "Socks and Tights", False),
        ("Leg warmers", 303, "Socks and Tights", False),
    )),
)  # fmt: skip
GARMENT_GROUPS: Final = {
    "Jersey Basic": 1002, "Knitwear": 1003, "Jersey Fancy": 1005, "Dressed": 1006,
    "Outdoor": 1007, "Trousers": 1009, "Blouses": 1010, "Shirts": 1011, "Skirt": 1012,
    "Dresses Ladies": 1013, "Trousers Denim": 1016, "Under-, Nightwear": 1017,
    "Swimwear": 1018, "Accessories": 1019, "Shoes": 1020, "Socks and Tights": 1021,
    "Shorts": 1025,
}  # fmt: skip
# (name, index_group_no, section and department prefix)
INDEX_GROUPS: Final = (
    ("Ladieswear", 1, "Womens"), ("Divided", 2, "Divided"), ("Menswear", 3, "Mens"),
    ("Baby/Children", 4, "Kids"), ("Sport", 26, "Sport"),
)  # fmt: skip
LADIES, DIVIDED, MENS, KIDS, SPORT = range(5)
# (index_code, index_name, index group)
INDEXES: Final = (
    ("A", "Ladieswear", LADIES), ("B", "Lingeries/Tights", LADIES),
    ("C", "Ladies Accessories", LADIES), ("D", "Divided", DIVIDED), ("F", "Menswear", MENS),
    ("G", "Baby Sizes 50-98", KIDS), ("H", "Children Sizes 92-140", KIDS),
    ("I", "Children Sizes 134-170", KIDS), ("J", "Children Accessories, Swimwear", KIDS),
    ("S", "Sport", SPORT),
)  # fmt: skip
# (name, colour_group_code, perceived_colour_value_id, perceived_colour_master_id, weight)
COLOURS: Final = (
    ("Black", 9, 4, 5, 10.0), ("White", 10, 3, 9, 5.0), ("Off White", 11, 1, 9, 2.0),
    ("Light Beige", 12, 1, 11, 2.0), ("Beige", 13, 2, 11, 2.0), ("Grey", 7, 2, 12, 1.5),
    ("Dark Grey", 8, 4, 12, 1.5), ("Light Grey", 6, 3, 12, 1.0), ("Dark Blue", 73, 4, 2, 5.0),
    ("Blue", 72, 7, 2, 2.0), ("Light Blue", 71, 3, 2, 2.0), ("Light Pink", 51, 3, 4, 2.0),
    ("Pink", 52, 7, 4, 1.0), ("Red", 42, 5, 18, 1.5), ("Dark Red", 43, 4, 18, 1.0),
    ("Dark Green", 23, 4, 19, 1.0), ("Khaki green", 20, 2, 19, 1.0), ("Yellow", 33, 5, 8, 1.0),
)  # fmt: skip
COLOUR_VALUES: Final = {1: "Dusty Light", 2: "Medium Dusty", 3: "Light", 4: "Dark",
                        5: "Bright", 7: "Medium"}  # fmt: skip
COLOUR_MASTERS: Final = {2: "Blue", 4: "Pink", 5: "Black", 8: "Yellow", 9: "White",
                         11: "Beige", 12: "Grey", 18: "Red", 19: "Green"}  # fmt: skip
# (name, graphical_appearance_no, weight)
APPEARANCES: Final = (
    ("Solid", 1010016, 10.0), ("All over pattern", 1010001, 3.0), ("Melange", 1010010, 2.0),
    ("Stripe", 1010017, 1.5), ("Denim", 1010005, 1.0), ("Check", 1010004, 0.5),
    ("Front print", 1010008, 1.0),
)  # fmt: skip
PROD_NAMES: Final = (
    "Tilda", "Luna", "Alva", "Bella", "Ellie", "Mia", "Sara", "Kim", "Otto", "Harry", "Simon",
    "Ivy", "Nora", "Vera", "Max", "Leo", "Rio", "Zoe", "Lisa", "Felix", "Hugo", "Stella",
)  # fmt: skip
# Cluster c's home index group follows its home product group PRODUCT_GROUPS[c % 9].
HOME_INDEX: Final = (LADIES, MENS, DIVIDED, LADIES, LADIES, DIVIDED, SPORT, KIDS, SPORT)
PRICE_POINTS: Final = (1.99, 2.99, 3.99, 4.99, 5.99, 6.99, 7.99, 9.99, 12.99, 14.99, 16.99,
                       19.99, 24.99, 29.99, 34.99, 39.99, 49.99, 59.99, 79.99, 99.99)  # fmt: skip
PRICE_SCALE: Final = 590.0  # the real prices look like a shelf price over a constant
DISCOUNTS: Final = ((1.0, 0.8), (0.9, 0.07), (0.7, 0.08), (0.5, 0.05))

CHUNK: Final = 1_000_000  # transaction rows per write; fixed, so files do not depend on memory
OWN_SHARE, SECOND_SHARE = 0.72, 0.13  # the rest of the purchases follow global popularity
HOME_GROUP_SHARE: Final = 0.9  # of a cluster's products in its home product group
HOME_INDEX_SHARE: Final = 0.8
PALETTE_SHARE: Final = 0.6
ZIPF_EXPONENT: Final = 1.1
QUALITY_PERSISTENCE: Final = 0.75  # how much an article's popularity carries over the phases
LAUNCHED_AT_START: Final = 0.6  # of products; the rest launch in a later phase
NEW_LAUNCH_BOOST: Final = 1.0
PHASE_DAYS: Final = 91
CLUSTER_SWING: Final = 0.2  # sigma of the log step of a cluster's buying rate per phase
CLUSTER_TREND: Final = 1.4  # log change of the surely rising and falling clusters
INACTIVE_CUSTOMERS: Final = 0.03
EARLY_CUSTOMERS: Final = 0.6  # present from the first day; the rest join over the range
DRIFTING_CUSTOMERS: Final = 0.2
BASKET_STOP: Final = 0.35  # geometric basket size, mean 1 / BASKET_STOP
REPEAT_IN_BASKET: Final = 0.06  # a line repeating the previous one: several units bought
MAX_ARTICLES: Final = 900_000  # product codes have six digits
MAX_CUSTOMERS: Final = 20_000_000  # string offsets of the id column stay 32-bit
WEEKDAY_VOLUME: Final = (0.95, 0.9, 0.9, 0.95, 1.1, 1.2, 1.0)
# Weak signals, per purchase line: the funnel of the article bought (probability, at most
# this many days before) and browsing drawn from the customer's taste of the day, which
# follows global popularity more often than purchases do (the noise; own and second
# taste shares as OWN_SHARE and SECOND_SHARE are for purchases, the rest is "anywhere").
# Carts are mostly abandoned (1.0 of 1.7 per line: shops see ~70%), bought-like picks.
FUNNEL: Final = {"view": (0.6, 6), "click": (0.3, 3), "add_to_cart": (0.7, 1)}
BROWSING: Final = {  # mean events per purchase line, own share, second share, days back
    "view": (3.0, 0.4, 0.15, 14),
    "click": (1.0, 0.55, 0.15, 14),
    "add_to_cart": (1.0, 0.72, 0.13, 7),
}


@dataclass(frozen=True)
class Profile:
    """How a generated shop behaves over time."""

    drifting_customers: float = DRIFTING_CUSTOMERS  # who move to another taste once
    cluster_swing: float = CLUSTER_SWING  # each taste's random walk in buying rate
    cluster_trend: float = CLUSTER_TREND  # one taste surely rises, one surely falls
    repurchase: float = 0.0  # share of lines that buy again one of the customer's latest
    seasonality: float = 0.0  # log amplitude of each taste's yearly cycle (peaks differ)


PROFILES: Final = {
    "default": Profile(),
    "no-drift": Profile(drifting_customers=0.0, cluster_swing=0.0, cluster_trend=0.0),
    "repurchase": Profile(repurchase=0.35),
    "seasonal": Profile(seasonality=1.2),
}
REPURCHASE_BACK: Final = 5  # a rebuy picks one of the customer's latest this many lines


@dataclass(frozen=True)
class GeneratedData:
    """What was written."""

    out_dir: Path
    customers: int
    articles: int
    transactions: int
    clusters: int
    weak_signals: int = 0  # rows of the weak-signals file; 0 when it was not asked for


@dataclass(frozen=True)
class _Sampler:
    """Draws indices in proportion to weights, within a given [lo, hi) range of them."""

    cum0: Floats  # running sum with a leading 0
    last_positive: Ints  # the last index at or before i with a positive weight

    @classmethod
    def of(cls, weights: Floats) -> _Sampler:
        positive = np.where(weights > 0, np.arange(len(weights)), -1)
        return cls(
            np.concatenate([[0.0], np.cumsum(weights)]),
            np.maximum.accumulate(positive).astype(np.int64),
        )

    def mass(self, lo: Ints, hi: Ints) -> Floats:
        return self.cum0[hi] - self.cum0[lo]

    def draw(self, rng: np.random.Generator, lo: Ints, hi: Ints) -> Ints:
        """Needs a positive mass in every range."""
        before = self.cum0[lo]
        target = before + rng.random(len(lo)) * (self.cum0[hi] - before)
        picked = np.searchsorted(self.cum0[1:], target, side="right").astype(np.int64)
        # Rounding can push a draw past its range's last weighted index.
        return np.minimum(picked, self.last_positive[hi - 1])


def _choice(rng: np.random.Generator, weights: Floats, n: int) -> Ints:
    cdf = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 64-char lowercase hex ids in sorted order, as the real files list them."""
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    order = np.argsort(raw[:, :8].copy().view(">u8").ravel(), kind="stable")
    raw = raw[order]
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((n, 64), dtype=np.uint8)
    chars[:, 0::2] = digits[raw >> 4]
    chars[:, 1::2] = digits[raw & 15]
    offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())]
    )


def _names(values: tuple[str, ...] | list[str], index: Ints) -> Objects:
    return np.array(values, dtype=object)[index]


@dataclass(frozen=True)
class _Catalogue:
    frame: pd.DataFrame
    cluster: Ints  # per article
    product: Ints  # per article
    launch: Ints  # phase a product goes on sale, per product
    base_price: Floats  # shelf price per article, before PRICE_SCALE


def _catalogue(rng: np.random.Generator, articles: int, k: int, phases: int) -> _Catalogue:
    n_groups = len(PRODUCT_GROUPS)
    # Colour variants of a product share a product code; at least k products exist.
    most = min(4, articles // k)
    sizes = rng.integers(1, most + 1, size=articles)
    products = int(np.searchsorted(np.cumsum(sizes), articles)) + 1
    sizes = sizes[:products]
    sizes[-1] = articles - sizes[:-1].sum()
    product_of = np.repeat(np.arange(products), sizes)
    rank_in_product = np.arange(articles) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    cluster = rng.permutation(np.arange(products) % k).astype(np.int64)
    home_group = np.arange(k) % n_groups
    home_index = (np.array(HOME_INDEX)[home_group] + np.arange(k) // n_groups) % len(INDEX_GROUPS)
    colour_weights = np.array([c[4] for c in COLOURS])
    palettes = np.stack([rng.choice(len(COLOURS), 3, replace=False) for _ in range(k)])

    group = np.where(
        rng.random(products) < HOME_GROUP_SHARE,
        home_group[cluster],
        rng.integers(0, n_groups, size=products),
    )
    index_group = np.where(
        rng.random(products) < HOME_INDEX_SHARE,
        home_index[cluster],
        rng.integers(0, len(INDEX_GROUPS), size=products),
    )
    # Product types, flattened over groups: men get their group's first type instead.
    type_rows = [(g, t) for g, (_, _, _, types) in enumerate(PRODUCT_GROUPS) for t in types]
    type_first = np.cumsum([0] + [len(types) for _, _, _, types in PRODUCT_GROUPS])
    n_types = np.diff(type_first)
    ptype = type_first[group] + (rng.random(products) * n_types[group]).astype(np.int64)
    for_men = np.array([t[3] for _, t in type_rows])
    ptype = np.where((index_group == MENS) & ~for_men[ptype], type_first[group], ptype)

    # The index within the index group follows the product group, as H&M files them.
    index_of = np.full((len(INDEX_GROUPS), n_groups), -1, dtype=np.int64)
    index_of[LADIES] = [0, 0, 0, 2, 1, 0, 0, 1, 1]
    index_of[DIVIDED], index_of[MENS], index_of[SPORT] = 3, 4, 9
    index_of[KIDS] = [-1, -1, -1, 8, -1, -1, 8, -1, -1]
    index = index_of[index_group, group]
    index = np.where(index < 0, 5 + rng.integers(0, 3, size=products), index)

    garment_names = list(GARMENT_GROUPS)
    garment = np.array([garment_names.index(t[2]) for _, t in type_rows])[ptype]
    appearance = _choice(rng, np.array([a[2] for a in APPEARANCES]), products)
    name = rng.integers(0, len(PROD_NAMES), size=products)
    codes = 100_000 + np.sort(rng.choice(MAX_ARTICLES, size=products, replace=False))
    first_variant = rng.integers(1, 30, size=products)

    launch = np.where(
        rng.random(products) < LAUNCHED_AT_START, 0, rng.integers(0, phases, size=products)
    )
    # Every cluster keeps something on sale from the first day.
    launch[np.unique(cluster, return_index=True)[1]] = 0

    typical = np.array([g[2] for g in PRODUCT_GROUPS])[group]
    shelf = typical * rng.lognormal(0.0, 0.35, size=products)
    points = np.array(PRICE_POINTS)
    nearest = np.clip(np.searchsorted(points, shelf), 0, len(points) - 1)

    colour = np.where(
        rng.random(articles) < PALETTE_SHARE,
        palettes[cluster[product_of], rng.integers(0, 3, size=articles)],
        _choice(rng, colour_weights, articles),
    )

    p = product_of
    type_name = np.array([t[0] for _, t in type_rows], dtype=object)[ptype[p]]
    group_name = _names([g[0] for g in PRODUCT_GROUPS], group[p])
    colour_name = _names([c[0] for c in COLOURS], colour)
    appearance_name = _names([a[0] for a in APPEARANCES], appearance[p])
    ig = index_group[p]
    section_name = (
        _names([g[2] for g in INDEX_GROUPS], ig)
        + " "
        + _names([g[1] for g in PRODUCT_GROUPS], group[p])
    )
    garment_name = _names(garment_names, garment[p])
    article_id = codes[p] * 1000 + first_variant[p] + rank_in_product
    lower_type = np.array([t[0].lower() for _, t in type_rows], dtype=object)[ptype[p]]
    frame = pd.DataFrame(
        {
            "article_id": pd.Series(article_id).map("{:010d}".format),
            "product_code": codes[p],
            "prod_name": _names(PROD_NAMES, name[p]) + " " + lower_type,
            "product_type_no": np.array([t[1] for _, t in type_rows])[ptype[p]],
            "product_type_name": type_name,
            "product_group_name": group_name,
            "graphical_appearance_no": np.array([a[1] for a in APPEARANCES])[appearance[p]],
            "graphical_appearance_name": appearance_name,
            "colour_group_code": np.array([c[1] for c in COLOURS])[colour],
            "colour_group_name": colour_name,
            "perceived_colour_value_id": np.array([c[2] for c in COLOURS])[colour],
            "perceived_colour_value_name": _names([COLOUR_VALUES[c[2]] for c in COLOURS], colour),
            "perceived_colour_master_id": np.array([c[3] for c in COLOURS])[colour],
            "perceived_colour_master_name": _names([COLOUR_MASTERS[c[3]] for c in COLOURS], colour),
            "department_no": 1000 + 100 * ig + garment[p],
            "department_name": _names([g[2] for g in INDEX_GROUPS], ig) + " " + garment_name,
            "index_code": _names([i[0] for i in INDEXES], index[p]),
            "index_name": _names([i[1] for i in INDEXES], index[p]),
            "index_group_no": np.array([g[1] for g in INDEX_GROUPS])[ig],
            "index_group_name": _names([g[0] for g in INDEX_GROUPS], ig),
            "section_no": 2 + n_groups * ig + group[p],
            "section_name": section_name,
            "garment_group_no": np.array(list(GARMENT_GROUPS.values()))[garment[p]],
            "garment_group_name": garment_name,
            "detail_desc": type_name
            + " in "
            + _names([c[0].lower() for c in COLOURS], colour)
            + " with a "
            + _names([a[0].lower() for a in APPEARANCES], appearance[p])
            + " look from the "
            + section_name
            + " range.",
        },
        columns=ARTICLES_SCHEMA.names,
    )
    return _Catalogue(frame, cluster[p], p, launch, points[nearest][p])


@dataclass(frozen=True)
class _Customers:
    ids: pa.Array
    table: pa.Table
    main: Ints  # taste cluster
    second: Ints  # a weaker second taste
    drift_to: Ints  # the taste from drift_day on; main for those who never drift
    drift_day: Ints
    start: Ints  # first day they can buy
    activity: Floats  # relative purchase rate; zero for those who never buy
    online: Floats  # probability that a basket is bought online (sales channel 2)


def _other_cluster(rng: np.random.Generator, main: Ints, k: int) -> Ints:
    if k == 1:
        return main.copy()
    return (main + rng.integers(1, k, size=len(main))) % k


def _customers(rng: np.random.Generator, n: int, k: int, days: int, profile: Profile) -> _Customers:
    ids = _hex_ids(rng, n)
    main = _choice(rng, rng.dirichlet(np.full(k, 4.0)), n)
    second = _other_cluster(rng, main, k)
    start = np.where(rng.random(n) < EARLY_CUSTOMERS, 0, rng.integers(0, days, size=n))
    drifting = rng.random(n) < profile.drifting_customers
    drift_to = np.where(drifting, _other_cluster(rng, main, k), main)
    drift_day = start + (rng.uniform(0.35, 0.9, size=n) * (days - start)).astype(np.int64)
    # Capped, so no single customer dominates a small data set.
    activity = np.minimum(0.1 + rng.lognormal(0.0, 1.1, size=n), 12.0)
    activity *= rng.random(n) >= INACTIVE_CUSTOMERS
    if not activity.any():
        activity[0] = 1.0
    online = rng.beta(2.2, 1.0, size=n)

    # The real file's fields hang together: news readers are the FN=1 members.
    fn = rng.random(n) < 0.35
    active = fn & (rng.random(n) < 0.97)
    status = _choice(rng, np.array([0.93, 0.067, 0.003]), n)
    news = np.where(fn, np.where(rng.random(n) < 0.99, 1, 2), 0)
    young = rng.random(n) < rng.uniform(0.3, 0.8, size=k)[main]
    age = np.where(young, rng.normal(24.0, 4.0, size=n), rng.normal(50.0, 11.0, size=n))
    postal_pool = _hex_ids(rng, max(1, n // 3))
    # A few postal codes are shared by very many customers, as in the real file.
    postal = (len(postal_pool) * rng.random(n) ** 3).astype(np.int64)
    table = pa.Table.from_arrays(
        [
            ids,
            pa.array(np.ones(n), mask=~fn),
            pa.array(np.ones(n), mask=~active),
            pa.array(
                _names(("ACTIVE", "PRE-CREATE", "LEFT CLUB"), status),
                type=pa.string(),
                mask=rng.random(n) < 0.0045,
            ),
            pa.array(
                _names(("NONE", "Regularly", "Monthly"), news),
                type=pa.string(),
                mask=rng.random(n) < 0.0117,
            ),
            pa.array(np.clip(np.round(age), 16, 99), mask=rng.random(n) < 0.0115),
            postal_pool.take(pa.array(postal)),
        ],
        schema=CUSTOMERS_SCHEMA,
    )
    return _Customers(ids, table, main, second, drift_to, drift_day, start, activity, online)


def _swing(rng: np.random.Generator, k: int, phases: int, profile: Profile) -> Floats:
    """Each taste cluster's buying rate per phase: a random walk, plus one taste that surely
    rises and one that surely falls over the range, whatever the seed; with seasons, a
    yearly cycle on top whose peak falls in another season for each taste."""
    walk = np.cumsum(rng.normal(0.0, profile.cluster_swing, size=(phases, k)), axis=0)
    walk -= walk[0]
    if k > 1:
        rising, falling = rng.choice(k, size=2, replace=False)
        ramp = np.linspace(0.0, profile.cluster_trend, phases)
        walk[:, rising] += ramp
        walk[:, falling] -= ramp
    swing: Floats = np.exp(np.clip(walk, -1.5, 1.5))
    if profile.seasonality:
        year = 2 * np.pi * np.arange(phases)[:, None] * PHASE_DAYS / 365.25
        peak = 2 * np.pi * np.arange(k)[None, :] / max(k, 4)
        swing = swing * np.exp(profile.seasonality * np.cos(year - peak))
    return swing


@dataclass(frozen=True)
class _Popularity:
    order: Ints  # articles grouped by cluster: position -> article
    bounds: Ints  # cluster c holds positions bounds[c]:bounds[c + 1]
    sampler: _Sampler  # over phases x positions, one row per phase


def _popularity(
    rng: np.random.Generator, catalogue: _Catalogue, cluster_share: Floats
) -> _Popularity:
    """A power law within each cluster whose ranking moves from phase to phase, with new
    launches entering high."""
    phases, k = cluster_share.shape
    n = len(catalogue.cluster)
    order = np.argsort(catalogue.cluster, kind="stable").astype(np.int64)
    cluster = catalogue.cluster[order]
    bounds = np.searchsorted(cluster, np.arange(k + 1)).astype(np.int64)
    product = catalogue.product[order]
    launch = catalogue.launch[product]
    quality = rng.normal(size=int(product.max()) + 1)[product] + 0.5 * rng.normal(size=n)
    fresh = np.sqrt(1.0 - QUALITY_PERSISTENCE**2)
    weights = np.empty((phases, n))
    # A floor keeps clusters nobody belongs to reachable for second tastes and drift.
    floor = np.maximum(cluster_share, 0.01 / k)
    for phase in range(phases):
        score = QUALITY_PERSISTENCE * quality + fresh * rng.normal(size=n)
        score += NEW_LAUNCH_BOOST * (launch == phase)
        ranked = np.lexsort((-score, cluster))
        rank = np.empty(n, dtype=np.int64)
        rank[ranked] = np.arange(n) - bounds[cluster[ranked]]
        w = (rank + 1.0) ** -ZIPF_EXPONENT * (launch <= phase)
        per_cluster = np.add.reduceat(w, bounds[:-1])
        weights[phase] = w / per_cluster[cluster] * floor[phase, cluster]
    return _Popularity(order, bounds, _Sampler.of(weights.ravel()))


def _day_weights(rng: np.random.Generator, start: date, days: int) -> Floats:
    dates = np.datetime64(start, "D") + np.arange(days)
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(np.int64)
    summer = 1.0 + 0.2 * np.cos(2 * np.pi * (day_of_year - 170) / 365.25)
    growth = 1.0 + 0.5 * np.arange(days) / days
    w = growth * summer * np.array(WEEKDAY_VOLUME)[weekday] * rng.lognormal(0.0, 0.1, days)
    normalised: Floats = w / w.sum()
    return normalised


def _phase_of(rng: np.random.Generator, day: Ints, days: int, phases: int) -> Ints:
    """Phases blend into each other: a day between two is drawn from either."""
    if phases == 1:
        return np.zeros(len(day), dtype=np.int64)
    x = day * ((phases - 1) / max(days - 1, 1))
    lo = np.minimum(x.astype(np.int64), phases - 2)
    return lo + (rng.random(len(day)) < x - lo)


@dataclass(frozen=True)
class _Tastes:
    """What a customer picks on a given day: their own (or drifted) cluster, their second
    one, or anything, each by the popularity of the day's phase."""

    people: _Customers
    popularity: _Popularity
    days: int
    phases: int
    n_articles: int

    def draw(
        self, rng: np.random.Generator, day: Ints, who: Ints, own_share: float, second_share: float
    ) -> Ints:
        people, popularity = self.people, self.popularity
        own = np.where(day >= people.drift_day[who], people.drift_to[who], people.main[who])
        roll = rng.random(len(day))
        cluster = np.where(roll < own_share, own, people.second[who])
        anywhere = roll >= own_share + second_share
        row = _phase_of(rng, day, self.days, self.phases) * self.n_articles
        lo = row + np.where(anywhere, 0, popularity.bounds[cluster])
        hi = row + np.where(anywhere, self.n_articles, popularity.bounds[cluster + 1])
        picked: Ints = popularity.order[popularity.sampler.draw(rng, lo, hi) - row]
        return picked


@dataclass(frozen=True)
class _SignalSink:
    """Where the weak signals of each chunk of purchases go, drawn from their own random
    stream so the three CSVs are the same bytes with or without them."""

    rng: np.random.Generator
    write: Callable[[pa.Table], None]


def _weak_signals(
    rng: np.random.Generator, day: Ints, who: Ints, what: Ints, tastes: _Tastes
) -> tuple[Ints, Ints, Ints, Ints]:
    """(day, customer, article, index in SIGNAL_TYPES) of the weak events around these
    purchase lines, in day order: the funnel of the bought article (FUNNEL) and browsing
    by the customer's taste of that day (BROWSING)."""
    parts: list[tuple[Ints, Ints, Ints, Ints]] = []
    start = tastes.people.start
    for kind, name in enumerate(SIGNAL_TYPES):
        probability, back = FUNNEL[name]
        hit = np.flatnonzero(rng.random(len(day)) < probability)
        when = np.maximum(day[hit] - rng.integers(0, back + 1, len(hit)), start[who[hit]])
        parts.append((when, who[hit], what[hit], np.full(len(hit), kind)))
        mean, own_share, second_share, back = BROWSING[name]
        line = np.repeat(np.arange(len(day)), rng.poisson(mean, len(day)))
        browser = who[line]
        when = np.maximum(day[line] - rng.integers(0, back + 1, len(line)), start[browser])
        seen = tastes.draw(rng, when, browser, own_share, second_share)
        parts.append((when, browser, seen, np.full(len(line), kind)))
    day_of, who_of, what_of, kind_of = (
        np.concatenate(c).astype(np.int64) for c in zip(*parts, strict=True)
    )
    order = np.argsort(day_of, kind="stable")
    return day_of[order], who_of[order], what_of[order], kind_of[order]


def _transactions(
    rng: np.random.Generator,
    *,
    transactions: int,
    start: date,
    days: int,
    catalogue: _Catalogue,
    people: _Customers,
    progress: Callable[[str], None],
    signals: _SignalSink | None = None,
    profile: Profile = PROFILES["default"],
) -> Iterator[pa.Table]:
    k = int(catalogue.cluster.max()) + 1
    n_articles = len(catalogue.cluster)
    phases = _phases(days)
    swing = _swing(rng, k, phases, profile)
    mass = np.bincount(people.main, weights=people.activity, minlength=k)
    popularity = _popularity(rng, catalogue, mass * swing / (mass * swing).sum(1, keepdims=True))
    tastes = _Tastes(people, popularity, days, phases, n_articles)
    signal_types = pa.array(SIGNAL_TYPES, pa.string())
    # Buyers by first day, so "who can buy on day d" is a prefix; one row of rates per phase.
    buyers = np.flatnonzero(people.activity > 0)
    buyers = buyers[np.argsort(people.start[buyers], kind="stable")]
    joined_by = people.start[buyers]
    n_buyers = len(buyers)
    rates = people.activity[buyers] * swing[:, people.main[buyers]]
    customer_sampler = _Sampler.of(rates.ravel())

    line_end = np.cumsum(rng.multinomial(transactions, _day_weights(rng, start, days)))
    dates = pa.array((np.datetime64(start, "D") + np.arange(days)).astype(str), pa.string())
    article_ids = pa.array(catalogue.frame["article_id"].to_numpy(), pa.string())
    factors = np.array([d[0] for d in DISCOUNTS])
    factor_weights = np.array([d[1] for d in DISCOUNTS])

    for first in range(0, transactions, CHUNK):
        n = min(CHUNK, transactions - first)
        day = np.searchsorted(line_end, np.arange(first, first + n), side="right")
        day = day.astype(np.int64)

        # Baskets: one customer, one channel, a few lines.
        sizes = rng.geometric(BASKET_STOP, size=n // 2 + 16)
        while sizes.sum() < n:
            sizes = np.concatenate([sizes, rng.geometric(BASKET_STOP, size=n // 2 + 16)])
        basket_start = np.cumsum(sizes) - sizes
        basket_start = basket_start[basket_start < n]
        basket_of = np.repeat(np.arange(len(basket_start)), np.diff(basket_start, append=n))
        basket_day = day[basket_start]
        row = _phase_of(rng, basket_day, days, phases) * n_buyers
        joined = row + np.searchsorted(joined_by, basket_day, side="right")
        # Nobody has joined yet only if every early customer never buys: then anyone may.
        joined = np.where(customer_sampler.mass(row, joined) > 0, joined, row + n_buyers)
        buyer = buyers[customer_sampler.draw(rng, row, joined) - row]
        online = rng.random(len(buyer)) < people.online[buyer]
        who = buyer[basket_of]
        channel = np.where(online, 2, 1)[basket_of]

        what = tastes.draw(rng, day, who, OWN_SHARE, SECOND_SHARE)
        if profile.repurchase:
            what = _rebuys(rng, who, what, profile.repurchase)
        factor = factors[_choice(rng, factor_weights, n)]

        # Several units of one article in one basket: the same row repeated, as in the real file.
        repeat = rng.random(n) < REPEAT_IN_BASKET
        repeat[basket_start] = False
        source = np.maximum.accumulate(np.where(repeat, 0, np.arange(n)))
        what, factor = what[source], factor[source]
        if signals is not None:
            lines = ~repeat  # several units of one article are one decision
            w_day, w_who, w_what, w_kind = _weak_signals(
                signals.rng, day[lines], who[lines], what[lines], tastes
            )
            signals.write(
                pa.Table.from_arrays(
                    [
                        dates.take(pa.array(w_day)),
                        people.ids.take(pa.array(w_who)),
                        article_ids.take(pa.array(w_what)),
                        signal_types.take(pa.array(w_kind)),
                    ],
                    schema=WEAK_SIGNALS_SCHEMA,
                )
            )

        price = np.round(catalogue.base_price[what] * factor / PRICE_SCALE, 6)
        yield pa.Table.from_arrays(
            [
                dates.take(pa.array(day)),
                people.ids.take(pa.array(who)),
                article_ids.take(pa.array(what)),
                pa.array(price),
                pa.array(channel.astype(np.int64)),
            ],
            schema=TRANSACTIONS_SCHEMA,
        )
        progress(f"transactions: {first + n:,} of {transactions:,}")


def _rebuys(rng: np.random.Generator, who: Ints, what: Ints, share: float) -> Ints:
    """`share` of the lines buy again the article of one of the customer's latest
    REPURCHASE_BACK lines before them (lines are in day order); a customer's first line
    stays as drawn."""
    order = np.lexsort((np.arange(len(who)), who))
    grouped = who[order]
    first = np.r_[True, grouped[1:] != grouped[:-1]]
    position = np.arange(len(who)) - np.maximum.accumulate(np.where(first, np.arange(len(who)), 0))
    back = np.minimum(position, rng.integers(1, REPURCHASE_BACK + 1, len(who)))
    again = (rng.random(len(who)) < share) & (back > 0)
    # Earlier rebuys are resolved first, so a chain of rebuys repeats one article.
    out = what.copy()
    sorted_what = out[order]
    for index in np.flatnonzero(again):
        sorted_what[index] = sorted_what[index - back[index]]
    out[order] = sorted_what
    return out


def _phases(days: int) -> int:
    return max(1, round(days / PHASE_DAYS))


def _write_csv(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """Unquoted, like the real files; nulls are empty fields."""
    with _csv_writer(path, schema) as write:
        for table in tables:
            write(table)


@contextlib.contextmanager
def _csv_writer(path: Path, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        sink.write((",".join(schema.names) + "\n").encode())
        with pacsv.CSVWriter(sink, schema, write_options=options) as writer:
            yield writer.write_table


def _clusters(
    customers: int, articles: int, transactions: int, days: int, clusters: int | None
) -> int:
    sizes = (
        ("customers", customers),
        ("articles", articles),
        ("transactions", transactions),
        ("days", days),
    )
    for name, value in sizes:
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    k = clusters if clusters is not None else min(8, max(2, articles // 25))
    if k < 1:
        raise ValueError(f"clusters must be positive, got {k}")
    if articles < k:
        raise ValueError(f"articles must be at least one per taste cluster: {articles} < {k}")
    if articles > MAX_ARTICLES:
        raise ValueError(f"articles must be at most {MAX_ARTICLES:,}, got {articles:,}")
    if customers > MAX_CUSTOMERS:
        raise ValueError(f"customers must be at most {MAX_CUSTOMERS:,}, got {customers:,}")
    return k


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
    weak_signals: bool = False,
    profile: str = "default",
) -> GeneratedData:
    """Write articles.csv, customers.csv and transactions_train.csv to out_dir, and with
    weak_signals the views, clicks and add-to-carts around those purchases to
    weak_signals.csv (batch.weak_signals; the three CSVs are the same either way).

    The same arguments always give the same bytes. `clusters` defaults to 8, fewer for
    small catalogues; the transactions span `days` days from `start`. `profile` names
    one of PROFILES.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    behaviour = PROFILES[profile]
    k = _clusters(customers, articles, transactions, days, clusters)
    say = progress if progress is not None else _quiet
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    say(f"articles: {articles:,}")
    catalogue = _catalogue(rng, articles, k, _phases(days))
    catalogue.frame.to_csv(out_dir / ARTICLES_FILE, index=False, lineterminator="\n")
    say(f"customers: {customers:,}")
    people = _customers(rng, customers, k, days, behaviour)
    _write_csv(out_dir / CUSTOMERS_FILE, CUSTOMERS_SCHEMA, [people.table])
    signal_rows = [0]
    with contextlib.ExitStack() as stack:
        signals = None
        signals_path = out_dir / WEAK_SIGNALS_FILE
        if weak_signals:
            write = stack.enter_context(_csv_writer(signals_path, WEAK_SIGNALS_SCHEMA))

            def counted(table: pa.Table) -> None:
                signal_rows[0] += table.num_rows
                write(table)

            signals = _SignalSink(np.random.default_rng([seed, 2]), counted)
        else:
            signals_path.unlink(missing_ok=True)  # a stale one would not match these CSVs
        _write_csv(
            out_dir / TRANSACTIONS_FILE,
            TRANSACTIONS_SCHEMA,
            _transactions(
                rng,
                transactions=transactions,
                start=start,
                days=days,
                catalogue=catalogue,
                people=people,
                progress=say,
                signals=signals,
                profile=behaviour,
            ),
        )
    return GeneratedData(out_dir, customers, articles, transactions, k, signal_rows[0])


def _quiet(_message: str) -> None:
    return None
