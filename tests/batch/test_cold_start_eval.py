"""The cold-start evaluation: its split and tasks on hand-made cases, and on generated data
that placing new articles by content finds the ones customers buy, where trending and the
same vectors shuffled do not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from batch.cold_start_eval import (
    ColdStartConfig,
    ColdStartResult,
    ModelRow,
    evaluate_cold_start,
    one_purchase_customers,
    print_cold_start,
    ranking_task,
    read_articles,
    run_cold_start,
    split_cold_start,
    trending_scores,
)
from batch.generate import generate
from recsys.hm_schema import TRANSACTIONS_FILE

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DAY = pd.Timestamp("2020-01-01")


def events_frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "day"])
    return frame.assign(ts=DAY + pd.to_timedelta(frame["day"], unit="D")).drop(columns="day")


def csv_events(folder: Path) -> pd.DataFrame:
    """The generator's purchases as read (its files are clean: no Spark needed)."""
    tx = pd.read_csv(folder / TRANSACTIONS_FILE, dtype={"article_id": str}, parse_dates=["t_dat"])
    return pd.DataFrame(
        {
            "customer_id": tx["customer_id"].to_numpy(dtype=object),
            "article_id": tx["article_id"].to_numpy(dtype=object),
            "ts": tx["t_dat"].to_numpy(),
        }
    )


def test_split_withholds_every_purchase_of_the_new_articles() -> None:
    events = events_frame(
        [(c, a, d) for c in "uvw" for a, d in (("a", 1), ("b", 2), ("c", 3), ("d", 9))]
        + [("u", "e", 9), ("v", "f", 9)]
    )
    config = ColdStartConfig(test_days=3, new_fraction=0.5, seed=1)
    split = split_cold_start(events, pd.Index(list("abcdef")), config)
    assert split.cutoff == DAY + pd.Timedelta(days=7)
    assert len(split.test) == 5 and set(split.test["article_id"]) == {"d", "e", "f"}
    assert len(split.new_articles) == 2  # half of the three sold in the test period
    assert set(split.new_articles) <= {"d", "e", "f"}
    assert not split.known_train["article_id"].isin(split.new_articles).any()
    with pytest.raises(ValueError, match="no train or no test"):
        split_cold_start(events, pd.Index(list("abcdef")), ColdStartConfig(test_days=30))


def test_ranking_task_masks_seen_items_and_judges_listed_ones() -> None:
    seen = events_frame([("u", "a", 0), ("v", "b", 0), ("x", "a", 0)])
    relevant = events_frame([("u", "a", 5), ("u", "c", 5), ("u", "c", 6), ("v", "zz", 5)])
    task = ranking_task(
        np.array(["u", "v"], dtype=object), np.array(list("abc"), dtype=object), seen, relevant
    )
    assert task.seen.toarray().tolist() == [[1, 0, 0], [0, 1, 0]]
    assert task.test_users.tolist() == [0]  # v's only purchase is outside the catalogue
    assert task.relevant.toarray().tolist() == [[1, 0, 1]]
    assert task.n_relevant.tolist() == [2]
    assert task.test_pairs_seen_in_train == 1 and task.test_events_unknown_item == 1


def test_trending_decays_by_age_and_one_purchase_customers_bought_once() -> None:
    train = events_frame([("u", "a", 0), ("v", "a", 7), ("v", "b", 7), ("w", "b", 7)])
    scores = trending_scores(train, np.array(["a", "b", "c"], dtype=object), 7.0)
    np.testing.assert_allclose(scores, [1.5, 2.0, 0.0])
    once = one_purchase_customers(train)
    assert once.values.tolist() == [["u", "a"], ["w", "b"]]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ColdStartResult:
    folder = tmp_path_factory.mktemp("cold-start") / "hm"
    generate(folder, seed=2, customers=2_000, articles=600, transactions=40_000)
    return evaluate_cold_start(csv_events(folder), read_articles(folder), ColdStartConfig())


def _row(rows: list[ModelRow], prefix: str) -> ModelRow:
    return next(r for r in rows if r.model.startswith(prefix))


def test_content_placement_finds_new_articles_that_trending_cannot(
    result: ColdStartResult,
) -> None:
    split = result.split
    assert split.new_articles >= 20 and split.new_article_test_events >= 50
    assert split.content_placed >= split.new_articles
    assert split.als_items + split.content_placed == split.catalogue == 600
    rows = result.new_articles
    content = _row(rows, "new for you: by content vector").metrics
    shuffled = _row(rows, "new for you: content vectors shuffled").metrics
    trending = _row(rows, "trending").metrics
    assert content.users == trending.users >= 50
    # Trending holds no new article; the content vectors rank the ones a customer buys
    # high among the new ones, and far better than the same vectors dealt at random.
    assert trending.recall == 0.0
    assert content.recall > 0.4
    assert content.recall > shuffled.recall + 0.15 and content.ndcg > shuffled.ndcg + 0.1
    full = _row(rows, "full catalogue").metrics
    assert full.recall >= trending.recall


def test_every_part_is_reported(result: ColdStartResult) -> None:
    assert result.content.validation_items > 0 and result.content.weighted
    assert [r.model for r in result.all_purchases] == ["ALS + content-placed", "ALS alone",
                                                       "trending"]  # fmt: skip
    alone = result.all_purchases[1]
    assert alone.content_share == 0.0 and alone.metrics.ndcg > 0
    once = {r.model: r.metrics for r in result.one_purchase}
    assert once["EMA from the purchase"].users >= once["ALS user factors"].users > 0
    assert [p.quantile for p in result.exposure] == [None, 0.5, 0.9, 0.95, 0.99]
    # The larger the content vectors, the more of the lists they take.
    shares = [p.content_share for p in result.exposure[1:]]
    assert shares == sorted(shares) and shares[-1] > 0.5
    console = Console(record=True, width=200)
    print_cold_start(result, console)
    text = console.export_text()
    assert "new for you: by content vector" in text and "norm quantile 0.95" in text
    assert ColdStartResult.model_validate_json(result.to_json()) == result


def test_run_reads_an_hm_folder_through_the_batch_cleaning(
    tmp_path: Path, spark: SparkSession
) -> None:
    generate(tmp_path / "hm", seed=4, customers=300, articles=200, transactions=6_000)
    run = run_cold_start(tmp_path / "hm", spark, ColdStartConfig(exposure_quantiles=()))
    assert run.data.events == 6_000 and run.split.catalogue == 200
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "ratings.tsv").write_text("user_id\titem_id\trating\ttimestamp\n")
    with pytest.raises(ValueError, match="needs article metadata"):
        run_cold_start(tmp_path / "ml", spark)
