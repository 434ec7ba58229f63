"""POST /items/availability through the real broker into the serving process's Qdrant Edge
copy: an unavailable article leaves every list (recommendations plain, filtered, MMR and
explained, similar items, trending and the trending fallback) within seconds, and comes
back when it is available again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys import keys
from recsys.settings import Settings
from serve.app import create_app
from serve.deps import AppState
from support import new_topic, two_versions, wait_for

WITHIN_S = 10.0
K = 50


def _state(client: TestClient) -> AppState:
    state: AppState = client.app.state.recsys  # type: ignore[attr-defined]
    return state


@pytest.fixture(scope="module")
def app(settings: Settings, trained: BatchReport) -> Iterator[TestClient]:
    """An app of its own on a catalog topic of its own: no other test's index copy sees
    these availabilities."""
    own = settings.model_copy(update={"catalog_topic": new_topic(settings, partitions=1)})
    with TestClient(create_app(own)) as client:
        wait_for(_state(client).catalog.reading.is_set, timeout=30)
        yield client


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["article_id"] for item in response.json()["items"]]


def _mark(app: TestClient, available: bool, *article_ids: str) -> None:
    body = [{"article_id": a, "available": available} for a in article_ids]
    response = app.post("/items/availability", json=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"article_ids": list(article_ids), "status": "accepted"}


def _lists(app: TestClient, customer: str, anchor: str, group: str) -> dict[str, list[str]]:
    """Every list an article can appear in, at the widest k."""
    rec = f"/recommend/{customer}"
    return {
        "recommend": _ids(app.get(rec, params={"k": K})),
        "recommend-mmr": _ids(app.get(rec, params={"k": K, "diversity_lambda": 0.5})),
        "recommend-group": _ids(app.get(rec, params={"k": K, "product_group": group})),
        "recommend-explain": _ids(app.get(rec, params={"k": 10, "explain": "true"})),
        "similar": _ids(app.get(f"/items/{anchor}/similar", params={"k": K})),
        "popular": _ids(app.get("/popular", params={"k": K})),
        "popular-group": _ids(app.get("/popular", params={"k": K, "product_group": group})),
        "fallback": _ids(app.get("/recommend/nobody-we-know", params={"k": K})),
    }


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([{"article_id": "a1", "available": "maybe"}], "valid boolean"),
        ([{"article_id": "a1"}], "Field required"),
        ([{"article_id": "bad id!", "available": False}], "should match pattern"),
        ([{"article_id": "a1", "available": False, "colour": "red"}], "Extra inputs"),
        ([{"article_id": "a1", "available": True}] * 2, "a1 is given twice"),
        ([], "at least 1 item"),
    ],
    ids=["not-a-bool", "missing", "bad-id", "unknown-field", "duplicate", "empty"],
)
def test_a_bad_availability_is_a_422_saying_why(app: TestClient, body: object, says: str) -> None:
    response = app.post("/items/availability", json=body)
    assert response.status_code == 422
    assert says in str(response.json()["detail"])


def test_an_unavailable_article_leaves_every_list_within_seconds(
    app: TestClient, known_customer: str
) -> None:
    # The customer's best item, and the best trending item (the fallback's first too).
    top = _ids(app.get(f"/recommend/{known_customer}", params={"k": 1}))[0]
    trending = _ids(app.get("/popular", params={"k": 1}))[0]
    anchor = _ids(app.get(f"/items/{top}/similar", params={"k": 1}))[0]
    served = _state(app).model.current
    assert served is not None
    meta = served.index.retrieve([top, trending])
    group = meta[top]["product_group_name"]
    trending_group = meta[trending]["product_group_name"]
    before = _lists(app, known_customer, anchor, group)
    for name in ("recommend", "recommend-mmr", "recommend-group", "recommend-explain"):
        assert top in before[name], name
    assert top in before["similar"]
    for name in ("popular", "fallback"):
        assert trending in before[name], name
    assert trending in _ids(app.get("/popular", params={"k": K, "product_group": trending_group}))

    started = time.perf_counter()
    _mark(app, False, top, trending)
    while top in _ids(app.get(f"/recommend/{known_customer}", params={"k": 1})):
        assert time.perf_counter() - started < WITHIN_S, "still recommended"
        time.sleep(0.005)
    gone_after = time.perf_counter() - started
    after = _lists(app, known_customer, anchor, group)
    for name, ids in after.items():
        assert top not in ids and trending not in ids, name
        if len(before[name]) == K:  # another item takes its place
            assert len(ids) == K, f"{name} is short of items"
    popular_group = _ids(app.get("/popular", params={"k": K, "product_group": trending_group}))
    assert trending not in popular_group
    # Its own page still shows alternatives (a sold-out item's "similar items").
    assert len(_ids(app.get(f"/items/{top}/similar", params={"k": 5}))) == 5
    assert 'catalog_articles_applied_total{placement="availability_only"} 2.0' in (
        app.get("/metrics").text
    )
    print(f"\nunavailable -> out of /recommend after {gone_after * 1000:.1f} ms")

    _mark(app, True, top, trending)
    wait_for(
        lambda: top in _ids(app.get(f"/recommend/{known_customer}", params={"k": 1})),
        timeout=WITHIN_S,
    )
    again = _lists(app, known_customer, anchor, group)
    assert again == before


def test_a_catalogue_change_keeps_an_article_unavailable(
    app: TestClient, catalogue_row: dict[str, Any]
) -> None:
    article_id = catalogue_row["article_id"]
    _mark(app, False, article_id)
    served = _state(app).model.current
    assert served is not None
    wait_for(lambda: article_id in served.index.unavailable(), timeout=WITHIN_S)
    renamed = {**catalogue_row, "prod_name": "Renamed while sold out"}
    assert app.post("/items", json=[renamed]).status_code == 202
    wait_for(
        lambda: (
            served.index.retrieve([article_id])[article_id]["prod_name"] == renamed["prod_name"]
        ),
        timeout=WITHIN_S,
    )
    assert served.index.retrieve([article_id])[article_id]["available"] is False
    assert article_id in served.index.unavailable()


def test_an_article_marked_before_it_exists_arrives_unavailable(
    app: TestClient, catalogue_row: dict[str, Any]
) -> None:
    new_id = "0999700000"
    _mark(app, False, new_id)
    assert app.post("/items", json=[{**catalogue_row, "article_id": new_id}]).status_code == 202
    wait_for(lambda: app.get(f"/items/{new_id}/similar").status_code == 200, timeout=WITHIN_S)
    served = _state(app).model.current
    assert served is not None
    assert served.index.retrieve([new_id])[new_id]["available"] is False
    assert new_id in served.index.unavailable()


def test_a_newly_loaded_version_gets_every_availability_before_it_serves(
    settings: Settings, trained: BatchReport, known_customer: str, tmp_path: Path
) -> None:
    """Two copies of the trained version, as two batch runs that never heard of it."""
    with (
        two_versions(settings, trained.version, tmp_path / "data", db=13) as (own, client),
        TestClient(create_app(own)) as app,
    ):
        wait_for(_state(app).catalog.reading.is_set, timeout=30)
        trending = _ids(app.get("/popular", params={"k": 1}))[0]
        _mark(app, False, trending)
        wait_for(lambda: trending not in _ids(app.get("/popular")), timeout=WITHIN_S)
        client.set(keys.LIVE_VERSION, "v2")
        deadline = time.monotonic() + 30
        while True:
            response = app.get("/popular", params={"k": K})
            assert trending not in _ids(response), "a version served with the article"
            if response.json()["model_version"] == "v2":
                break
            assert time.monotonic() < deadline, "v2 never went live"


@pytest.fixture
def catalogue_row(app: TestClient, transactions: pd.DataFrame) -> dict[str, Any]:
    """A bought article as POST /items takes it (the index's metadata, less its own)."""
    article_id = str(transactions["article_id"].value_counts().index[5])
    served = _state(app).model.current
    assert served is not None
    meta = served.index.retrieve([article_id])[article_id]
    skip = {"placed_by", "available"}
    return {
        "article_id": article_id,
        **{k: v for k, v in meta.items() if k not in skip and v not in ("", None)},
    }
