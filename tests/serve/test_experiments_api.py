"""A/B experiments through the real app, broker, updater and Valkey: each customer's arm
changes how /recommend answers, the list is recorded, a purchase that names it is credited
to its arm once, and GET /experiments/{name} and /metrics report the same counts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys.experiments.definitions import ExperimentsFileError
from recsys.settings import Settings
from serve.app import create_app
from support import running_updater, wait_for


@pytest.fixture(scope="module")
def experiment_name() -> str:
    return f"lambda-{uuid.uuid4().hex[:8]}"  # counters live in the suite's shared Redis


@pytest.fixture(scope="module")
def experiment_api(
    settings: Settings, trained: BatchReport, tmp_path_factory: pytest.TempPathFactory,
    experiment_name: str,
) -> Iterator[TestClient]:  # fmt: skip
    path = tmp_path_factory.mktemp("experiments") / "experiments.json"
    variants = [
        {"name": "control", "share": 0.5},
        {"name": "diverse", "share": 0.5, "diversity_lambda": 0.3, "candidate_pool": 60},
    ]
    path.write_text(json.dumps({"experiments": [{"name": experiment_name, "variants": variants}]}))
    with TestClient(create_app(settings.model_copy(update={"experiments_file": path}))) as client:
        yield client


def experiment_settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.recsys.settings  # type: ignore[attr-defined]
    return settings


def _customers(transactions: pd.DataFrame, n: int) -> list[str]:
    return [str(c) for c in transactions["customer_id"].value_counts().index[:n]]


def test_each_arm_gets_its_knobs_and_every_list_is_counted(
    experiment_api: TestClient, transactions: pd.DataFrame, experiment_name: str
) -> None:
    shown = {"control": 0, "diverse": 0}
    for customer in _customers(transactions, 40):
        body = experiment_api.get(f"/recommend/{customer}", params={"k": 5}).json()
        assert body["experiment"] == experiment_name
        assert body["recommendation_id"]
        assert body["diversity_lambda"] == (0.3 if body["variant"] == "diverse" else 1.0)
        shown[body["variant"]] += 1
        # Assignment is sticky: the same customer lands in the same arm every time.
        again = experiment_api.get(f"/recommend/{customer}", params={"k": 5}).json()
        assert again["variant"] == body["variant"]
        shown[again["variant"]] += 1
    assert shown["control"] > 0 and shown["diverse"] > 0
    # A lambda the request names itself wins over the arm's.
    customer = _customers(transactions, 1)[0]
    params = {"k": 5, "diversity_lambda": 0.9}
    assert experiment_api.get(f"/recommend/{customer}", params=params).json()[
        "diversity_lambda"
    ] == pytest.approx(0.9)
    shown_before = sum(shown.values()) + 1
    report = experiment_api.get(f"/experiments/{experiment_name}").json()
    assert sum(v["impressions"] for v in report["variants"]) == shown_before


def test_a_purchase_from_a_list_is_credited_to_its_arm_once(
    experiment_api: TestClient, transactions: pd.DataFrame, redis_conn: redis.Redis,
    settings: Settings, experiment_name: str,
) -> None:  # fmt: skip
    customer = _customers(transactions, 3)[2]
    body = experiment_api.get(f"/recommend/{customer}", params={"k": 5}).json()
    arm, article = body["variant"], body["items"][0]["article_id"]

    def purchases() -> dict[str, int]:
        report = experiment_api.get(f"/experiments/{experiment_name}").json()
        return {v["name"]: v["purchases"] for v in report["variants"]}

    before = purchases()
    event = {
        "customer_id": customer,
        "article_id": article,
        "event_id": f"xp-{uuid.uuid4().hex}",
        "recommendation_id": body["recommendation_id"],
    }
    # The updater runs with the API's experiments file, as `recsys up` starts them.
    with running_updater(experiment_settings(experiment_api), redis_conn):
        for _ in range(2):  # a client's retry: the same event twice
            assert experiment_api.post("/events/purchase", json=event).status_code == 202
        wait_for(lambda: purchases()[arm] == before[arm] + 1)
        # The duplicate is applied and credited nowhere; nothing else moved.
        other = next(name for name in before if name != arm)
        wait_for(
            lambda: (
                experiment_api.get(f"/recommend/{customer}").json()["applied_event_id"]
                == event["event_id"]
            )
        )
    after = purchases()
    assert after == {arm: before[arm] + 1, other: before[other]}
    report = experiment_api.get(f"/experiments/{experiment_name}").json()
    credited = next(v for v in report["variants"] if v["name"] == arm)
    assert credited["conversions"] >= 1 and credited["conversion"] > 0
    # Prometheus reads the same counters.
    metrics = experiment_api.get("/metrics").text
    line = f'experiment_purchases_total{{experiment="{experiment_name}",variant="{arm}"}}'
    assert f"{line} {float(after[arm])}" in metrics


def test_unknown_experiment_is_a_404(experiment_api: TestClient) -> None:
    response = experiment_api.get("/experiments/no-such-thing")
    assert response.status_code == 404
    assert "unknown experiment" in response.json()["detail"]
    listed = experiment_api.get("/experiments").json()
    assert listed["active"] and len(listed["experiments"]) == 1


def test_without_experiments_responses_name_none(api: TestClient, known_customer: str) -> None:
    body = api.get(f"/recommend/{known_customer}").json()
    assert body["experiment"] is None and body["recommendation_id"] is None


def test_a_bad_experiments_file_stops_the_start_naming_the_field(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "experiments:\n  - name: x\n    variants:\n"
        "      - {name: a, share: 0.5}\n      - {name: b, share: 0.6}\n"
    )
    with pytest.raises(ExperimentsFileError, match="shares"):
        create_app(settings.model_copy(update={"experiments_file": path}))


def test_scrapes_read_the_experiment_counters_at_most_once_per_cache_window(
    experiment_api: TestClient, redis_conn: redis.Redis
) -> None:
    """/metrics serves the experiments' counters from a short cache: a flood of scrapes
    is not a flood of Redis reads (each read is one PFCOUNT per variant)."""

    def pfcounts() -> int:
        return int(redis_conn.info("commandstats").get("cmdstat_pfcount", {}).get("calls", 0))

    assert experiment_settings(experiment_api).metrics_cache_s >= 5
    assert experiment_api.get("/metrics").status_code == 200
    before = pfcounts()
    for _ in range(20):
        assert "experiment_ledger_up 1.0" in experiment_api.get("/metrics").text
    # Read at every scrape, this was 40; two reads at most if a window ended meanwhile.
    assert pfcounts() - before <= 4
