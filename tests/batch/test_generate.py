"""The generator writes the real H&M schema, honours its traps, and plants structure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pytest

from batch.generate import generate
from batch.hm_schema import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CUSTOMERS_FILE,
    CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE,
    TRANSACTIONS_SCHEMA,
)

SIZE = {"customers": 600, "articles": 400, "transactions": 30_000}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    generate(out, seed=3, **SIZE)
    return out


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"article_id": str, "customer_id": str, "postal_code": str})


def test_columns_are_the_real_ones_in_order(files: Path) -> None:
    for name, schema in (
        (ARTICLES_FILE, ARTICLES_SCHEMA),
        (CUSTOMERS_FILE, CUSTOMERS_SCHEMA),
        (TRANSACTIONS_FILE, TRANSACTIONS_SCHEMA),
    ):
        table = pacsv.read_csv(
            files / name, convert_options=pacsv.ConvertOptions(column_types=schema)
        )
        assert table.schema.names == schema.names, name
        assert table.schema == schema, name


def test_counts_and_ids(files: Path) -> None:
    articles = _read(files / ARTICLES_FILE)
    customers = _read(files / CUSTOMERS_FILE)
    tx = _read(files / TRANSACTIONS_FILE)
    assert (len(articles), len(customers), len(tx)) == (
        SIZE["articles"],
        SIZE["customers"],
        SIZE["transactions"],
    )
    assert articles["article_id"].str.fullmatch(r"0\d{9}").all()
    assert articles["article_id"].is_unique
    assert customers["customer_id"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert customers["customer_id"].is_unique
    assert tx["customer_id"].isin(customers["customer_id"]).all()
    assert tx["article_id"].isin(articles["article_id"]).all()


def test_values_look_like_the_real_data(files: Path) -> None:
    tx = _read(files / TRANSACTIONS_FILE)
    days = pd.to_datetime(tx["t_dat"], format="%Y-%m-%d")
    assert days.min() >= pd.Timestamp("2018-09-20")
    assert days.max() <= pd.Timestamp("2020-09-22")
    assert tx["price"].between(0.0, 1.0, inclusive="neither").all()
    assert set(tx["sales_channel_id"]) == {1, 2}
    customers = _read(files / CUSTOMERS_FILE)
    assert customers["FN"].isna().any() and customers["age"].isna().any()
    # The trap of the real data: the same article bought several times on one day.
    assert tx.duplicated(["t_dat", "customer_id", "article_id"]).any()


def test_tastes_are_planted(files: Path) -> None:
    tx = _read(files / TRANSACTIONS_FILE).merge(
        _read(files / ARTICLES_FILE)[["article_id", "product_group_name"]], on="article_id"
    )
    regulars = tx.groupby("customer_id").filter(lambda g: len(g) >= 20)
    own_share = (
        regulars.groupby("customer_id")["product_group_name"]
        .agg(lambda s: s.value_counts(normalize=True).iloc[0])
        .mean()
    )
    global_share = tx["product_group_name"].value_counts(normalize=True).iloc[0]
    assert own_share > global_share + 0.3, (own_share, global_share)


def test_popularity_is_skewed(files: Path) -> None:
    counts = _read(files / TRANSACTIONS_FILE)["article_id"].value_counts()
    top_decile = counts.iloc[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.35


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    small = {"customers": 50, "articles": 40, "transactions": 500}
    generate(tmp_path / "a", seed=5, **small)
    generate(tmp_path / "b", seed=5, **small)
    generate(tmp_path / "c", seed=6, **small)
    for name in (ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / TRANSACTIONS_FILE).read_bytes() != (
        tmp_path / "c" / TRANSACTIONS_FILE
    ).read_bytes()


@pytest.mark.parametrize(
    "kwargs",
    [{"customers": 0}, {"transactions": -1}, {"articles": 1}, {"articles": 10, "clusters": 9}],
)
def test_bad_sizes_are_refused(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        generate(tmp_path, **kwargs)
