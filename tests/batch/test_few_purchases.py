"""Customers with one or two purchases (batch.few_purchases): who is judged, trending
within a customer's groups, the blend's ends, and a whole run on a shop where what sells
now says more than one purchase does, so validation chooses to blend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from batch.competition import prepare_week_split
from batch.eval_config import EvalConfig
from batch.few_purchases import (
    Blended,
    FewPurchasesResult,
    few_purchase_task,
    print_few_purchases,
    run_few_purchases,
)
from batch.few_purchases import _group_trending as group_trending
from batch.model_specs import default_models
from ranking_cases import events_frame
from recsys.ranking.metrics import AlignedFactors, recommend
from recsys.settings import Settings

HOT = ("i3", "i14", "i25", "i36")
GROUPS = pd.Series({f"i{j}": f"g{j // 10}" for j in range(40)})


def fashion_shop(seed: int = 0) -> pd.DataFrame:
    """Five weeks. Regulars buy 25 articles of one group of ten; four articles sell hot
    from day 14 (a crowd buys them). Shoppers buy one article, then come back in the
    validation week or the test week (the last) for a hot one."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, int]] = []
    for r in range(60):
        group = r % 4
        rows += [(f"r{r}", f"i{group * 10 + int(rng.integers(10))}", int(rng.integers(35)))
                 for _ in range(25)]  # fmt: skip
    for c in range(150):
        rows.append((f"c{c}", str(rng.choice(HOT)), int(rng.integers(14, 35))))
    for s in range(240):
        rows.append((f"s{s}", f"i{int(rng.integers(40))}", int(rng.integers(0, 21))))
        back = int(rng.integers(22, 28)) if s % 2 else int(rng.integers(29, 35))
        rows.append((f"s{s}", str(rng.choice(HOT)), back))
    return events_frame(rows)


def test_only_customers_with_one_or_two_articles_before_are_judged() -> None:
    rows = [("a", "x", 1), ("b", "x", 1), ("b", "y", 2), ("b", "y", 3), ("c", "x", 1),
            ("c", "y", 2), ("c", "z", 3), ("a", "y", 20), ("b", "z", 20), ("c", "w", 20),
            ("early", "x", -20)]  # fmt: skip
    task = prepare_week_split(events_frame(rows), EvalConfig()).test
    judged = lambda t: sorted(t.user_ids[t.test_users])  # noqa: E731
    assert judged(task) == ["a", "b", "c"]
    assert judged(few_purchase_task(task, 1, 1)) == ["a"]
    assert judged(few_purchase_task(task, 2, 2)) == ["b"]  # y twice: two distinct articles
    assert judged(few_purchase_task(task, 1, 2)) == ["a", "b"]


def test_group_trending_keeps_to_the_groups_a_customer_bought_from() -> None:
    task = prepare_week_split(fashion_shop(), EvalConfig()).test
    scores = np.arange(1, len(task.item_ids) + 1, dtype=np.float32)
    model = group_trending(task, GROUPS, scores)
    users = np.arange(len(task.user_ids))
    got = model.scores(users)
    groups = GROUPS.reindex(pd.Index(task.item_ids)).to_numpy()
    for user in users[:50]:
        bought = {groups[i] for i in task.seen[user].indices}
        for item, group in enumerate(groups):
            assert got[user, item] == (scores[item] if group in bought else 0.0)


def test_the_blend_at_0_ranks_as_the_vector_and_at_1_as_trending() -> None:
    task = prepare_week_split(fashion_shop(), EvalConfig()).test
    rng = np.random.default_rng(1)
    users = rng.normal(size=(len(task.user_ids), 4)).astype(np.float32)
    items = rng.normal(size=(len(task.item_ids), 4)).astype(np.float32)
    everything = np.ones(len(task.item_ids), dtype=bool)
    vector = AlignedFactors(users, items, np.ones(len(users), dtype=bool), everything, 1.0)
    popular = rng.random(len(task.item_ids)).astype(np.float32) + 0.1
    trending = AlignedFactors(np.ones((len(users), 1), np.float32), popular[:, None],
                              vector.has_user, everything, 1.0)  # fmt: skip
    some = task.test_users[:20]
    seen = task.seen[some]

    def top(model: AlignedFactors | Blended) -> np.ndarray:
        return recommend(model, seen, some, 5)

    assert (top(Blended(vector, trending, 0.0, task.seen)) == top(vector)).all()
    assert (top(Blended(vector, trending, 1.0, task.seen)) == top(trending)).all()
    assert not (top(Blended(vector, trending, 0.5, task.seen)) == top(vector)).all()


@pytest.fixture(scope="module")
def result() -> FewPurchasesResult:
    pipeline = default_models(Settings(tuning_max_trials=2), None, other_trainer=False)[0]
    config = EvalConfig(search_max_trials=2, search_budget_s=60)
    return run_few_purchases(fashion_shop(), GROUPS, pipeline, config, 7.0)


def test_where_what_sells_now_decides_validation_chooses_to_blend(
    result: FewPurchasesResult,
) -> None:
    assert result.chosen["overall"] >= 0.5
    assert set(result.chosen) == {"overall", "group"}
    rows = {(r.purchases, r.model): r for r in result.rows}
    both = "1-2"
    blend = rows[both, "vector + trending"]
    assert blend.weight == result.chosen["overall"]
    assert blend.metrics.ndcg > rows[both, "vector"].metrics.ndcg
    assert blend.metrics.users == rows[both, "vector"].metrics.users > 0
    assert rows["1", "vector"].metrics.users + rows["2", "vector"].metrics.users == (
        rows[both, "vector"].metrics.users
    )


def test_the_result_round_trips_and_prints(result: FewPurchasesResult) -> None:
    assert FewPurchasesResult.model_validate_json(result.to_json()) == result
    assert set(result.validation_ndcg["overall"]) == {f"{w / 10:.1f}" for w in range(11)}
    console = Console(record=True, width=160)
    print_few_purchases(result, console)
    text = console.export_text()
    assert "vector + group trending" in text and "NDCG@10" in text


def test_a_shop_without_such_customers_is_a_clear_error() -> None:
    """Every customer has bought ten articles before either week: nobody to judge."""
    rows = [(f"u{u}", f"i{(u + j) % 30}", j) for u in range(20) for j in range(10)]
    rows += [(f"u{u}", f"i{u % 30}", 15 + u % 12) for u in range(20)]
    pipeline = default_models(Settings(tuning_max_trials=1), None, other_trainer=False)[0]
    with pytest.raises(ValueError, match="no customer with one or two purchases"):
        run_few_purchases(events_frame(rows), None, pipeline, EvalConfig(search_max_trials=1), 7.0)
