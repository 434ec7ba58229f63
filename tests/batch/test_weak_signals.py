"""The weak-signals file: the generator writes it beside unchanged CSVs, seeded, with views
more numerous than clicks and carts and tied to what customers buy; the loader reads it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from batch.generate import generate
from batch.weak_signals import WEAK_SIGNALS_FILE, load_weak_signals
from recsys.hm_schema import ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE

SMALL = {"customers": 300, "articles": 200, "transactions": 5_000}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("weak")
    generate(root / "plain", seed=9, **SMALL)
    data = generate(root / "weak", seed=9, weak_signals=True, **SMALL)
    assert data.weak_signals > 0
    return root / "plain", root / "weak"


def test_the_h_and_m_files_are_the_same_with_or_without_it(folders: tuple[Path, Path]) -> None:
    plain, weak = folders
    for name in (ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE):
        assert (plain / name).read_bytes() == (weak / name).read_bytes(), name
    assert not (plain / WEAK_SIGNALS_FILE).exists()
    assert load_weak_signals(plain) is None


def test_same_seed_same_bytes_and_a_rerun_without_it_removes_it(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    _, weak = folders
    generate(tmp_path, seed=9, weak_signals=True, **SMALL)
    assert (tmp_path / WEAK_SIGNALS_FILE).read_bytes() == (weak / WEAK_SIGNALS_FILE).read_bytes()
    generate(tmp_path, seed=9, **SMALL)
    assert not (tmp_path / WEAK_SIGNALS_FILE).exists()


def test_signals_are_numerous_known_and_tied_to_purchases(folders: tuple[Path, Path]) -> None:
    _, weak = folders
    signals = load_weak_signals(weak)
    assert signals is not None
    tx = pd.read_csv(weak / TRANSACTIONS_FILE, dtype=str)
    articles = pd.read_csv(weak / ARTICLES_FILE, dtype=str)
    counts = signals["event_type"].value_counts()
    assert counts["view"] > counts["click"] > 0 and counts["add_to_cart"] > 0
    assert len(signals) > 3 * len(tx)  # more numerous than purchases
    assert set(signals["customer_id"]) <= set(tx["customer_id"])
    assert set(signals["article_id"]) <= set(articles["article_id"])
    assert signals["ts"].min() >= pd.Timestamp(tx["t_dat"].min())
    # Tied to what is bought: a customer's signals hit their purchases far more often than
    # signals shuffled across customers do.
    bought = set(zip(tx["customer_id"], tx["article_id"], strict=True))
    mine = sum((c, a) in bought for c, a in zip(signals["customer_id"], signals["article_id"],
                                                 strict=True))  # fmt: skip
    shuffled = signals["customer_id"].sample(frac=1.0, random_state=0).to_numpy()
    other = sum((c, a) in bought for c, a in zip(shuffled, signals["article_id"], strict=True))
    assert mine > 2 * other


def test_the_loader_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / WEAK_SIGNALS_FILE).write_text("t_dat,customer_id,article_id\n")
    with pytest.raises(ValueError, match="missing column"):
        load_weak_signals(tmp_path)
    (tmp_path / WEAK_SIGNALS_FILE).write_text(
        "t_dat,customer_id,article_id,event_type\n2020-01-01,c1,0108775015,purchase\n"
    )
    with pytest.raises(ValueError, match="unknown event_type"):
        load_weak_signals(tmp_path)
