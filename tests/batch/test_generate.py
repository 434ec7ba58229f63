"""The generator writes the real H&M schema, honours its traps, and plants structure."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import batch.generate as gen
from batch.generate import GeneratedData, generate
from recsys.hm_schema import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CUSTOMERS_FILE,
    CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE,
    TRANSACTIONS_SCHEMA,
)

SIZE = {"customers": 600, "articles": 400, "transactions": 30_000}
FILES = (
    (ARTICLES_FILE, ARTICLES_SCHEMA),
    (CUSTOMERS_FILE, CUSTOMERS_SCHEMA),
    (TRANSACTIONS_FILE, TRANSACTIONS_SCHEMA),
)
CODE_AND_NAME = (
    ("product_type_no", "product_type_name"),
    ("graphical_appearance_no", "graphical_appearance_name"),
    ("colour_group_code", "colour_group_name"),
    ("perceived_colour_value_id", "perceived_colour_value_name"),
    ("perceived_colour_master_id", "perceived_colour_master_name"),
    ("department_no", "department_name"),
    ("index_code", "index_name"),
    ("index_group_no", "index_group_name"),
    ("section_no", "section_name"),
    ("garment_group_no", "garment_group_name"),
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate(tmp_path_factory.mktemp("gen"), seed=3, **SIZE)


@pytest.fixture(scope="module")
def files(written: GeneratedData) -> Path:
    return written.out_dir


def _arrow(path: Path, schema: pa.Schema) -> pa.Table:
    options = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True)
    return pacsv.read_csv(path, convert_options=options)


def _frames(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    articles, customers, tx = (_arrow(out / name, schema).to_pandas() for name, schema in FILES)
    return articles, customers, tx


@pytest.fixture(scope="module")
def frames(files: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _frames(files)


@pytest.fixture(scope="module")
def bought(frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    """Transactions with their article's product group and a parsed day."""
    articles, _, tx = frames
    out = tx.merge(articles[["article_id", "product_group_name"]], on="article_id")
    out["day"] = pd.to_datetime(out["t_dat"], format="%Y-%m-%d")
    return out


def _top_group_share(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("customer_id")["product_group_name"].agg(
        lambda s: s.value_counts(normalize=True).iloc[0]
    )


def _top_group(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("customer_id")["product_group_name"].agg(
        lambda s: s.value_counts().index[0]
    )


def test_columns_are_the_real_ones_in_order_with_a_plain_header(files: Path) -> None:
    for name, schema in FILES:
        header = (files / name).open(encoding="utf-8").readline().rstrip("\n")
        assert header == ",".join(schema.names), name
        table = _arrow(files / name, schema)
        assert table.schema.names == schema.names, name
        assert table.schema == schema, name


def test_the_counts_asked_for_are_the_counts_written(
    written: GeneratedData, frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    articles, customers, tx = frames
    assert (len(articles), len(customers), len(tx)) == (
        SIZE["articles"],
        SIZE["customers"],
        SIZE["transactions"],
    )
    assert (written.articles, written.customers, written.transactions) == (
        SIZE["articles"],
        SIZE["customers"],
        SIZE["transactions"],
    )
    assert written.clusters == 8


def test_ids_keep_their_shape(frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    articles, customers, tx = frames
    assert articles["article_id"].str.fullmatch(r"0\d{9}").all()
    assert articles["article_id"].is_unique
    # The product code is the article id's middle; colour variants share it.
    assert (articles["article_id"].str[1:7].astype(int) == articles["product_code"]).all()
    assert articles["product_code"].nunique() < len(articles)
    assert customers["customer_id"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert customers["customer_id"].is_unique
    assert customers["customer_id"].is_monotonic_increasing
    assert customers["postal_code"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert tx["customer_id"].isin(customers["customer_id"]).all()
    assert tx["article_id"].isin(articles["article_id"]).all()


def test_article_codes_match_their_names(
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    articles = frames[0]
    for code, name in CODE_AND_NAME:
        pairs = articles[[code, name]].drop_duplicates()
        assert pairs[code].is_unique and pairs[name].is_unique, (code, name)
    # A product's variants differ in colour, not in what they are.
    per_product = articles.groupby("product_code")[
        ["product_type_name", "product_group_name", "index_name", "prod_name"]
    ].nunique()
    assert (per_product == 1).all().all()
    assert articles["detail_desc"].str.len().gt(20).all()
    types = articles.groupby("product_group_name")["product_type_name"].unique()
    assert "Trousers" in types["Garment Lower body"]
    assert "Sweater" in types["Garment Upper body"]


def test_values_look_like_the_real_data(
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    _, customers, tx = frames
    days = pd.to_datetime(tx["t_dat"], format="%Y-%m-%d")
    assert days.min() >= pd.Timestamp("2018-09-20")
    assert days.max() <= pd.Timestamp("2020-09-21")
    assert days.is_monotonic_increasing
    assert days.dt.to_period("M").nunique() >= 24
    assert tx["price"].between(0.0, 0.6, inclusive="neither").all()
    assert tx["price"].median() < 0.1
    assert (tx["price"].round(6) == tx["price"]).all()
    assert set(tx["sales_channel_id"]) == {1, 2}
    # Nullable fields are empty in places, and only take the real file's values.
    # (club_member_status is empty for under 1% as in the real file: too few to insist on.)
    for column in ("FN", "Active", "age", "fashion_news_frequency"):
        assert customers[column].isna().any(), column
    assert set(customers["FN"].dropna()) == {1.0}
    assert set(customers["club_member_status"].dropna()) <= {"ACTIVE", "PRE-CREATE", "LEFT CLUB"}
    assert set(customers["fashion_news_frequency"].dropna()) <= {"NONE", "Regularly", "Monthly"}
    assert customers["age"].dropna().between(16, 99).all()
    # Like the real data, some customers never bought anything.
    assert 0 < (~customers["customer_id"].isin(tx["customer_id"])).sum() < len(customers) // 4


def test_the_same_article_is_bought_again_on_the_same_day(
    frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    tx = frames[2]
    repeats = tx.duplicated(["t_dat", "customer_id", "article_id"]).mean()
    assert 0.01 < repeats < 0.3


def test_customers_have_a_taste(bought: pd.DataFrame) -> None:
    counts = bought.groupby("customer_id").size()
    regulars = bought[bought["customer_id"].isin(counts[counts >= 20].index)]
    assert regulars["customer_id"].nunique() >= 100
    own_share = _top_group_share(regulars).mean()
    global_share = bought["product_group_name"].value_counts(normalize=True).iloc[0]
    assert own_share > 0.5
    assert own_share > global_share + 0.25, (own_share, global_share)


def test_activity_and_popularity_are_skewed(bought: pd.DataFrame) -> None:
    counts = bought["article_id"].value_counts()
    top_decile = counts.iloc[: SIZE["articles"] // 10].sum() / counts.sum()
    assert top_decile > 0.35
    per_customer = bought.groupby("customer_id").size()
    assert per_customer.max() > 5 * per_customer.median()
    assert per_customer.max() < 0.05 * len(bought)


def test_tastes_drift_over_time(bought: pd.DataFrame) -> None:
    quarter = bought["day"].rank(pct=True)
    early = bought.loc[quarter <= 0.25, "product_group_name"].value_counts(normalize=True)
    late = bought.loc[quarter > 0.75, "product_group_name"].value_counts(normalize=True)
    # About 0.05 from joining customers alone; the planted trends bring at least 0.09.
    assert 0.5 * early.sub(late, fill_value=0).abs().sum() > 0.075

    # Some customers move to another taste in the later part of their history.
    counts = bought.groupby("customer_id").size()
    regulars = bought[bought["customer_id"].isin(counts[counts >= 30].index)]
    later = regulars.groupby("customer_id")["day"].rank(method="first", pct=True) > 0.5
    top_first = _top_group(regulars[~later])
    top_later = _top_group(regulars[later]).reindex(top_first.index)
    assert len(top_first) >= 50
    changed = (top_first != top_later).mean()
    # Under 0.02 without drift: only sampling noise moves a regular's top group.
    assert 0.05 < changed < 0.5, changed


def test_new_articles_launch_later(bought: pd.DataFrame) -> None:
    """Articles that sell well yet were not sold at all in the first half: new launches."""
    middle = bought["day"].min() + (bought["day"].max() - bought["day"].min()) / 2
    sales = bought.groupby("article_id")["day"].agg(["min", "size"])
    assert ((sales["min"] > middle) & (sales["size"] >= 20)).sum() >= 5


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    small = {"customers": 50, "articles": 40, "transactions": 500}
    generate(tmp_path / "a", seed=5, **small)
    generate(tmp_path / "b", seed=5, **small)
    generate(tmp_path / "c", seed=6, **small)
    for name, _ in FILES:
        a, b, c = ((tmp_path / d / name).read_bytes() for d in "abc")
        assert a == b, name
        assert a != c, name


def test_chunks_join_into_one_sorted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "CHUNK", 997)
    messages: list[str] = []
    data = generate(
        tmp_path,
        customers=80,
        articles=60,
        transactions=5_000,
        seed=9,
        start=date(2020, 1, 1),
        days=30,
        progress=messages.append,
    )
    articles, customers, tx = _frames(tmp_path)
    assert len(tx) == data.transactions == 5_000
    assert tx["t_dat"].is_monotonic_increasing
    assert tx["t_dat"].min() >= "2020-01-01"
    assert tx["t_dat"].max() <= "2020-01-30"
    assert tx["customer_id"].isin(customers["customer_id"]).all()
    assert tx["article_id"].isin(articles["article_id"]).all()
    assert sum("transactions" in m for m in messages) == 6
    assert messages[-1] == "transactions: 5,000 of 5,000"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"customers": 0},
        {"transactions": -1},
        {"days": 0},
        {"articles": 0},
        {"articles": 1},
        {"articles": 10, "clusters": 11},
        {"clusters": 0},
        {"articles": 2_000_000},
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must"):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_one_of_everything_is_enough(tmp_path: Path) -> None:
    generate(tmp_path, customers=1, articles=1, transactions=1, clusters=1, days=1)
    articles, customers, tx = _frames(tmp_path)
    assert (len(articles), len(customers), len(tx)) == (1, 1, 1)
    assert tx["customer_id"].iloc[0] == customers["customer_id"].iloc[0]
    assert tx["t_dat"].iloc[0] == "2018-09-20"


def _bought(out: Path) -> pd.DataFrame:
    articles, _, tx = _frames(out)
    rows = tx.merge(articles[["article_id", "product_group_name"]], on="article_id")
    rows["day"] = pd.to_datetime(rows["t_dat"], format="%Y-%m-%d")
    return rows


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Each profile's shop, the same size and seed as the default one."""
    return {
        name: _bought(generate(tmp_path_factory.mktemp(name), seed=3, profile=name, **SIZE).out_dir)
        for name in ("no-drift", "repurchase", "seasonal")
    }


def _changed_top_group(rows: pd.DataFrame) -> float:
    counts = rows.groupby("customer_id").size()
    regulars = rows[rows["customer_id"].isin(counts[counts >= 30].index)]
    later = regulars.groupby("customer_id")["day"].rank(method="first", pct=True) > 0.5
    top_first = _top_group(regulars[~later])
    return float((top_first != _top_group(regulars[later]).reindex(top_first.index)).mean())


def _rebought(rows: pd.DataFrame) -> float:
    """Share of (customer, article, day) decisions whose article the customer bought on
    an earlier day."""
    days = rows[["customer_id", "article_id", "day"]].drop_duplicates()
    first = days.groupby(["customer_id", "article_id"])["day"].transform("min")
    return float((days["day"] > first).mean())


def _seasonal_swing(rows: pd.DataFrame) -> float:
    """Mean over product groups of how far their share moves between seasons."""
    season = rows["day"].dt.month % 12 // 3
    share = pd.crosstab(season, rows["product_group_name"], normalize="index")
    return float((share.max() - share.min()).mean())


def test_profiles_make_other_shops(bought: pd.DataFrame, profiles: dict[str, pd.DataFrame]) -> None:
    # Without drift a regular's top product group stays (only sampling noise moves it).
    assert _changed_top_group(profiles["no-drift"]) < 0.6 * _changed_top_group(bought)
    # Rebuying: many more decisions are of an article the customer bought before.
    assert _rebought(profiles["repurchase"]) > _rebought(bought) + 0.06
    # Seasons: product groups' shares swing more between the seasons of the year.
    assert _seasonal_swing(profiles["seasonal"]) > 1.5 * _seasonal_swing(bought)


def test_an_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="profile must be one of"):
        generate(tmp_path, profile="festive", **SIZE)
