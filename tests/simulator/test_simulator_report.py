"""Tallies, count bounds and the report: what is an error, how percentiles are taken, and
that the table and the JSON carry the figures."""

from __future__ import annotations

import json

import httpx
import pytest
from rich.console import Console

from recsys.ids import MAX_ID_LENGTH
from simulator.bad_requests import KINDS
from simulator.measure import Recorder, latency_summary
from simulator.report import DriftedCustomer, DriftSummary, SimulationReport, report_table
from simulator.traffic import Budget


def test_latency_percentiles_are_in_milliseconds() -> None:
    summary = latency_summary([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert summary.count == 100
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p90_ms == pytest.approx(90.1)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == pytest.approx(100.0)
    empty = latency_summary([])
    assert (empty.count, empty.p50_ms, empty.p99_ms) == (0, None, None)


def test_errors_are_5xx_transport_and_unexpected_answers() -> None:
    rec = Recorder()
    rec.response("recommend", 200, 0.01, expect="2xx", what="GET /recommend/a", body="{}")
    rec.response("bad", 422, 0.01, expect="4xx", what="k=0: GET /recommend/a", body="{}")
    assert rec.errors == {}
    rec.response("purchase", 503, 0.02, expect="2xx", what="POST /events/purchase", body="down")
    rec.response("bad", 200, 0.01, expect="4xx", what="k=0: GET /recommend/a", body="{}")
    rec.transport_error("probe", 5.0, httpx.ReadTimeout("slow"), "GET /recommend/a")
    assert rec.errors == {"purchase: HTTP 503": 1, "bad: HTTP 200": 1, "probe: ReadTimeout": 1}
    assert rec.counts() == {
        "bad": {"2xx": 1, "4xx": 1},
        "probe": {"transport": 1},
        "purchase": {"5xx": 1},
        "recommend": {"2xx": 1},
    }
    assert rec.requests == 5
    assert any("k=0: GET /recommend/a -> 200" in s for s in rec.error_samples)


def test_bad_requests_count_as_refused_only_with_a_4xx() -> None:
    rec = Recorder()
    rec.bad_request("k=0", 422)
    rec.bad_request("k=0", 200)
    rec.bad_request("malformed JSON", 500)
    rec.bad_request("over-long id", None)  # a transport error
    summary = rec.bad_summary()
    assert (summary.sent, summary.refused_4xx) == (4, 1)
    assert summary.by_reason == {"k=0": 2, "malformed JSON": 1, "over-long id": 1}


def test_budget_stops_at_the_first_bound_reached() -> None:
    budget = Budget(max_events=2, max_requests=3)
    assert budget.take_event() and not budget.exhausted
    assert budget.take_event() and budget.stopped_by == "max_events"
    assert not budget.take_event()
    assert budget.take_request() and budget.take_request() and budget.take_request()
    assert not budget.take_request() and budget.out_of_requests
    assert budget.stopped_by == "max_events"  # the first reason stays
    other = Budget(max_events=10, max_requests=1)
    assert other.take_request() and not other.take_request()
    assert other.stopped_by == "max_requests"


def test_each_bad_request_is_invalid_for_its_reason() -> None:
    made = {make("cust", "0100000001", "run-1").reason: make("cust", "0100000001", "run-1")
            for make in KINDS}  # fmt: skip
    assert set(made) == {"k=0", "k=51", "over-long id", "unknown article", "malformed JSON",
                         "missing article_id", "unknown event type"}  # fmt: skip
    assert made["k=0"].params == {"k": "0"}
    assert len(made["over-long id"].path.rsplit("/", 1)[1]) == MAX_ID_LENGTH + 1
    assert made["malformed JSON"].body is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(made["malformed JSON"].body)
    unknown = made["unknown article"].body
    assert unknown is not None and json.loads(unknown)["article_id"] == "sim-unknown-run-1"


def _report() -> SimulationReport:
    rec = Recorder()
    for ms in (4, 5, 6, 30):
        rec.response("recommend", 200, ms / 1000, expect="2xx", what="GET", body="")
    rec.response("purchase", 202, 0.008, expect="2xx", what="POST", body="")
    rec.freshness_s += [0.012, 0.020]
    rec.probes = 3
    rec.probes_timed_out = 1
    return SimulationReport(
        api_url="http://127.0.0.1:8000",
        run_id="abc123",
        seed=7,
        started_at="2026-11-26T10:00:00+00:00",
        duration_s=10.0,
        elapsed_s=10.2,
        stopped_by="duration",
        target_events_per_s=20.0,
        events_per_s=19.5,
        sessions=400,
        dropped_sessions=0,
        requests=rec.requests,
        events_posted=199,
        events_accepted=199,
        latency=rec.latency_summaries(),
        status_counts=rec.counts(),
        errors={},
        error_samples=[],
        bad_requests=rec.bad_summary(),
        freshness=rec.freshness_summary(10, 5.0),
        drift=DriftSummary(0.2, 5.0, 40, [DriftedCustomer("c1", "Shoes", "Swimwear", 2, 1)]),
    )


def test_table_and_json_carry_the_figures() -> None:
    report = _report()
    console = Console(width=160, record=True)
    console.print(report_table(report))
    text = console.export_text()
    for expected in ("events/s sustained", "19.5 (target 20)", "p50 16.0 ms", "1 timed out",
                     "recommend", "purchase", "1 of 40 drifted customers"):  # fmt: skip
        assert expected in text, expected
    saved = json.loads(report.to_json())
    assert saved["freshness"]["completed"] == 2
    assert saved["freshness"]["p50_ms"] == pytest.approx(16.0)
    assert saved["latency"]["recommend"]["count"] == 4
    assert saved["drift"]["customers"][0]["to_group"] == "Swimwear"
    assert report.error_count == 0
