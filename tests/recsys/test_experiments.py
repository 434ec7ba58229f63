"""A/B experiments (recsys.experiments): definitions and their errors, assignment that no
process or restart changes, the ledger's attribution against the suite's Valkey, the
significance test on planted data, and the Prometheus view of the same numbers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry
from scipy.stats import norm

import recsys.experiments.ledger as ledger_module
from observability.experiment_metrics import ExperimentsCollector, ExportLease
from recsys import keys
from recsys.experiments.assignment import assign, assign_active, bucket
from recsys.experiments.definitions import (
    Experiment,
    Experiments,
    ExperimentsFileError,
    Variant,
    experiments_from_settings,
    load_experiments,
)
from recsys.experiments.ledger import (
    MAX_OUTCOMES,
    MAX_SEEN,
    Impression,
    Ledger,
    Purchase,
    VariantCounts,
    new_recommendation_id,
)
from recsys.experiments.stats import newcombe, report, wilson, z_test
from recsys.index.base import Mmr
from recsys.multiplexed_redis import MultiplexedRedis
from recsys.settings import Settings
from recsys.stores import redis_client

DB = 9  # a database of its own
WINDOW = 3_600
Z95 = 1.959963984540054

GOOD_YAML = """
experiments:
  - name: mmr-lambda
    description: does a little diversity sell more?
    enabled: true
    variants:
      - {name: control, share: 0.5}
      - {name: diverse, share: 0.5, diversity_lambda: 0.7, candidate_pool: 200}
  - name: old-fallback
    enabled: false
    salt: "2"
    variants:
      - {name: trending, share: 0.25, fallback_policy: trending}
      - {name: nothing, share: 0.75, fallback_policy: none, model_version: v1}
"""


def two_arms(
    name: str = "exp", salt: str = "", shares: tuple[float, ...] = (0.5, 0.5)
) -> Experiment:
    names = ["control", "treatment", "third", "fourth"]
    return Experiment(
        name=name,
        salt=salt,
        variants=[Variant(name=names[i], share=s) for i, s in enumerate(shares)],
    )


# --- definitions ------------------------------------------------------------------------


def test_a_yaml_and_a_json_file_define_the_same_experiments(tmp_path: Path) -> None:
    yaml_file = tmp_path / "experiments.yaml"
    yaml_file.write_text(GOOD_YAML)
    loaded = load_experiments(yaml_file)
    json_file = tmp_path / "experiments.json"
    json_file.write_text(loaded.model_dump_json())
    assert load_experiments(json_file) == loaded
    assert loaded.active is not None and loaded.active.name == "mmr-lambda"
    assert loaded.active.control.name == "control"
    old = loaded.get("old-fallback")
    assert old is not None and not old.enabled and old.variants[1].fallback_policy == "none"
    assert loaded.get("missing") is None


def test_the_setting_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert experiments_from_settings(Settings(_env_file=None)).experiments == []  # type: ignore[call-arg]
    path = tmp_path / "x.yml"
    path.write_text(GOOD_YAML)
    monkeypatch.setenv("RECSYS_EXPERIMENTS_FILE", str(path))
    monkeypatch.setenv("RECSYS_ATTRIBUTION_WINDOW_S", "600")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert len(experiments_from_settings(settings).experiments) == 2
    assert Ledger.from_settings(settings).window_s == 600
    monkeypatch.setenv("RECSYS_ATTRIBUTION_WINDOW_S", "5")
    with pytest.raises(ValueError, match="attribution_window_s"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("variants", "named", "says"),
    [
        (
            "[{name: a, share: 0.5}, {name: b, share: 0.4}]",
            "experiments[0].variants",
            "shares must sum to 1, they sum to 0.9",
        ),
        (
            "[{name: a, share: 0.5}, {name: a, share: 0.5}]",
            "experiments[0].variants",
            "unique, repeated: a",
        ),
        ("[{name: a, share: 1.0}]", "experiments[0].variants", "at least 2"),
        (
            "[{name: a, share: 0.5}, {name: b, share: 0.5, diversity_lambda: 2}]",
            "experiments[0].variants[1].diversity_lambda",
            "less than or equal to 1",
        ),
        (
            "[{name: a, share: 0.5}, {name: b, share: 0.5, diversity_lamda: 0.5}]",
            "experiments[0].variants[1].diversity_lamda",
            "Extra inputs are not permitted",
        ),
        (
            "[{name: a, share: 0}, {name: b, share: 1}]",
            "experiments[0].variants[0].share",
            "greater than 0",
        ),
        (
            "[{name: a, share: 0.5}, {name: b, share: 0.5, candidate_pool: 5}]",
            "experiments[0].variants[1].candidate_pool",
            "greater than or equal to 10",
        ),
        (
            "[{name: a, share: 0.5}, {name: b, share: 0.5, fallback_policy: random}]",
            "experiments[0].variants[1].fallback_policy",
            "'trending' or 'none'",
        ),
        (
            "[{name: a, share: 0.99999}, {name: b, share: 0.00001}]",
            "experiments[0].variants",
            "never be assigned: b",
        ),
        (
            "[{name: 'a b', share: 0.5}, {name: b, share: 0.5}]",
            "experiments[0].variants[0].name",
            "should match pattern",
        ),
    ],
)
def test_a_bad_definition_is_one_line_naming_the_field(
    tmp_path: Path, variants: str, named: str, says: str
) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(f"experiments:\n  - name: e1\n    variants: {variants}\n")
    with pytest.raises(ExperimentsFileError) as caught:
        load_experiments(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {named}: "), message
    assert says in message


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("e.json", '{"experiments": [', "not valid JSON"),
        ("e.yaml", "experiments: [\n", "not valid YAML"),
        ("e.toml", "", ".json, .yaml or .yml"),
        ("missing.json", None, "cannot read"),
        ("e.json", "[]", "file: Input should be a valid dictionary"),
        ("e.json", '{"experiment": []}', "experiment: Extra inputs are not permitted"),
        (
            "e.yaml",
            "experiments:\n"
            "  - {name: x, variants: [{name: a, share: 0.5}, {name: b, share: 0.5}]}\n"
            "  - {name: y, variants: [{name: a, share: 0.5}, {name: b, share: 0.5}]}\n",
            "experiments: Value error, at most one experiment may be enabled, 2 are: x, y",
        ),
        (
            "e.yaml",
            "experiments:\n"
            "  - {name: x, variants: [{name: a, share: 0.5}, {name: b, share: 0.5}]}\n"
            "  - {name: x, enabled: false,\n"
            "     variants: [{name: a, share: 0.5}, {name: b, share: 0.5}]}\n",
            "experiment names must be unique, repeated: x",
        ),
    ],
)
def test_an_unreadable_file_says_why(
    tmp_path: Path, name: str, content: str | None, says: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ExperimentsFileError) as caught:
        load_experiments(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_variant_replaces_the_service_default_and_the_request_still_wins() -> None:
    plain = Variant(name="a", share=0.5)
    diverse = Variant(name="b", share=0.5, diversity_lambda=0.6, candidate_pool=40)
    assert plain.relevance(None, 1.0) == 1.0 and diverse.relevance(None, 1.0) == 0.6
    assert diverse.relevance(0.9, 1.0) == 0.9
    assert plain.mmr(10, 1.0) is None and diverse.mmr(10, 1.0) is None
    assert plain.mmr(10, 0.6) == Mmr(relevance=0.6, candidates=100)
    assert diverse.mmr(10, 0.6) == Mmr(relevance=0.6, candidates=40)
    assert diverse.mmr(50, 0.6) == Mmr(relevance=0.6, candidates=50)  # never fewer than k


# --- assignment -------------------------------------------------------------------------

_ASSIGN_SCRIPT = """
import json, sys
from recsys.experiments.assignment import assign
from recsys.experiments.definitions import Experiment
e = Experiment.model_validate_json(sys.argv[1])
print(json.dumps([assign(e, f"c{i}").name for i in range(2000)]))
"""


def test_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    experiment = two_arms(shares=(0.2, 0.3, 0.5))
    here = [assign(experiment, f"c{i}").name for i in range(2000)]
    seed = "7" if os.environ.get("PYTHONHASHSEED") == "4242" else "4242"  # not ours
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", _ASSIGN_SCRIPT, experiment.model_dump_json()],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == here
    # And the recipe itself is pinned: a change to it would silently move customers.
    assert bucket(two_arms(), "customer-1") == 2651


def test_shares_hold_over_100k_customers_and_each_experiment_splits_anew() -> None:
    experiment = two_arms(shares=(0.2, 0.3, 0.5))
    ids = [f"customer-{i}" for i in range(100_000)]
    got = Counter(assign(experiment, c).name for c in ids)
    for variant in experiment.variants:
        assert got[variant.name] / len(ids) == pytest.approx(variant.share, abs=0.005)
    # Another salt (or name) is another split, independent of this one.
    first = [assign(two_arms(), c).name for c in ids[:20_000]]
    salted = [assign(two_arms(salt="v2"), c).name for c in ids[:20_000]]
    renamed = [assign(two_arms(name="other"), c).name for c in ids[:20_000]]
    for other in (salted, renamed):
        same = sum(a == b for a, b in zip(first, other, strict=True)) / len(first)
        assert same == pytest.approx(0.5, abs=0.02)


def test_only_the_enabled_experiment_assigns() -> None:
    off = Experiment(name="off", enabled=False, variants=two_arms().variants)
    assert assign_active(Experiments(experiments=[off]), "c1") is None
    on = two_arms("on")
    found = assign_active(Experiments(experiments=[off, on]), "c1")
    assert found is not None and found.experiment is not off
    assert found.variant == assign(on, "c1")


# --- the ledger -------------------------------------------------------------------------


@pytest.fixture
def url(settings: Settings, redis_conn: redis.Redis) -> str:
    assert settings.redis_url
    return settings.redis_url.rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    own = redis_client(url, 5.0)
    own.flushdb()
    try:
        yield own
    finally:
        own.flushdb()
        own.close()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(WINDOW)


def shown(
    ledger: Ledger,
    client: redis.Redis,
    customer: str,
    articles: list[str],
    now: float,
    variant: str = "treatment",
    experiment: str = "exp",
) -> str:
    rec_id = new_recommendation_id()
    ledger.record_impression_sync(
        client, Impression(rec_id, experiment, variant, customer, articles), now=now
    )
    return rec_id


def test_a_purchase_is_credited_to_the_recommendation_it_names(
    ledger: Ledger, client: redis.Redis
) -> None:
    t = 1_000_000.0
    rec = shown(ledger, client, "alice", ["a1", "a2", "a3"], t)
    shown(ledger, client, "alice", ["a2"], t + 10)  # newer, also showed a2
    got = ledger.attribute_sync(client, Purchase("e1", "alice", "a2", rec), now=t + 20)
    assert got is not None
    assert (got.experiment, got.variant, got.recommendation_id) == ("exp", "treatment", rec)
    assert got.by == "recommendation" and got.first
    # A second article bought from the same list: another purchase, the same conversion.
    again = ledger.attribute_sync(client, Purchase("e2", "alice", "a3", rec), now=t + 30)
    assert again is not None and again.recommendation_id == rec
    counts = ledger.counts_sync(client, two_arms())
    assert counts["treatment"] == VariantCounts(
        impressions=2, conversions=1, purchases=2, customers=1
    )
    assert counts["control"] == VariantCounts()
    # Kept for the window; the event's outcome twice as long.
    assert 0 < client.ttl(keys.experiment_impressions("alice")) <= WINDOW
    assert WINDOW < client.ttl(keys.experiment_attributed("alice")) <= 2 * WINDOW


def test_a_count_a_crash_interrupted_is_completed_by_the_redelivery_and_made_once(
    ledger: Ledger, client: redis.Redis
) -> None:
    """The attribution (the customer's slot) and the count (the experiment's) are two
    steps: an updater that dies between them leaves the outcome stored and the count
    undone; the event's redelivery completes it, and a third delivery counts nothing."""
    t = 2_000_000.0
    rec = shown(ledger, client, "gina", ["g1", "g2"], t)
    purchase = Purchase("crash-1", "gina", "g1", rec)
    first_step = ("EVAL", ledger_module._ATTRIBUTE_LUA, *ledger._attribute_args(purchase, t + 5))
    client.execute_command(*first_step)  # the updater dies here
    assert ledger.counts_sync(client, two_arms())["treatment"].purchases == 0
    redelivered = ledger.attribute_sync(client, purchase, now=t + 60)
    assert redelivered is not None and not redelivered.first and redelivered.converted
    assert ledger.attribute_sync(client, purchase, now=t + 70) is not None
    counts = ledger.counts_sync(client, two_arms())["treatment"]
    assert (counts.purchases, counts.conversions) == (1, 1)


def test_a_customers_ledger_stays_bounded_whatever_the_traffic(
    ledger: Ledger, client: redis.Redis
) -> None:
    """A client polling /recommend and buying without end: the customer's impressions and
    purchase outcomes stay at MAX_SEEN and MAX_OUTCOMES, the latest ones still count."""
    t = 5_000_000.0
    recs = [shown(ledger, client, "ivy", [f"a{n}"], t + n) for n in range(3 * MAX_SEEN)]
    assert client.hexists(keys.experiment_impressions("ivy"), recs[-1])
    assert not client.hexists(keys.experiment_impressions("ivy"), recs[0])

    last = 3 * MAX_SEEN - 1
    for n in range(MAX_OUTCOMES + 50):
        ledger.attribute_sync(client, Purchase(f"buy{n}", "ivy", "zz"), now=t + 1000 + n)
    assert client.hlen(keys.experiment_attributed("ivy")) == MAX_OUTCOMES
    got = ledger.attribute_sync(client, Purchase("hit", "ivy", f"a{last}"), now=t + 2000)
    assert got is not None and got.recommendation_id == recs[-1] and got.first
    retry = ledger.attribute_sync(client, Purchase("hit", "ivy", f"a{last}"), now=t + 2001)
    assert retry == dataclasses.replace(got, first=False)
    assert client.hlen(keys.experiment_attributed("ivy")) == MAX_OUTCOMES
    # The oldest outcomes were the ones forgotten.
    assert not client.hexists(keys.experiment_attributed("ivy"), "buy0")
    assert client.hexists(keys.experiment_attributed("ivy"), f"buy{MAX_OUTCOMES + 49}")


def test_without_a_known_recommendation_the_customers_latest_showing_gets_it(
    ledger: Ledger, client: redis.Redis
) -> None:
    t = 2_000_000.0
    old = shown(ledger, client, "bob", ["x", "y"], t)
    new = shown(ledger, client, "bob", ["y", "z"], t + 60)
    shown(ledger, client, "carol", ["x"], t + 90)  # someone else's showing never counts
    by_customer = ledger.attribute_sync(client, Purchase("e1", "bob", "y"), now=t + 120)
    assert by_customer is not None and by_customer.recommendation_id == new
    assert by_customer.by == "customer"
    only_old = ledger.attribute_sync(client, Purchase("e2", "bob", "x"), now=t + 120)
    assert only_old is not None and only_old.recommendation_id == old
    # An unknown recommendation id, or one of another customer, falls back the same way.
    carol_rec = shown(ledger, client, "carol", ["z"], t + 100)
    unknown = ledger.attribute_sync(client, Purchase("e3", "bob", "z", "nope"), now=t + 120)
    assert unknown is not None and unknown.recommendation_id == new and unknown.by == "customer"
    foreign = ledger.attribute_sync(client, Purchase("e4", "bob", "z", carol_rec), now=t + 120)
    assert foreign is not None and foreign.recommendation_id == new
    # A recommendation that did not show the article falls back too.
    wrong = ledger.attribute_sync(client, Purchase("e5", "bob", "x", new), now=t + 120)
    assert wrong is not None and wrong.recommendation_id == old and wrong.by == "customer"
    # Never shown, or shown only to someone else: nobody's.
    assert ledger.attribute_sync(client, Purchase("e6", "bob", "never"), now=t + 120) is None
    assert ledger.attribute_sync(client, Purchase("e7", "dave", "x", "nope"), now=t + 120) is None


def test_outside_the_window_nothing_is_credited(ledger: Ledger, client: redis.Redis) -> None:
    t = 3_000_000.0
    rec = shown(ledger, client, "erin", ["a"], t)
    late = t + WINDOW + 1
    assert ledger.attribute_sync(client, Purchase("e1", "erin", "a", rec), now=late) is None
    assert ledger.attribute_sync(client, Purchase("e2", "erin", "a"), now=late) is None
    in_time = ledger.attribute_sync(client, Purchase("e3", "erin", "a"), now=t + WINDOW - 1)
    assert in_time is not None
    # A newer impression prunes the customer's index to the window.
    shown(ledger, client, "erin", ["b"], late)
    assert client.zcard(keys.experiment_seen("erin")) == 1


def test_each_event_counts_once_whatever_the_retries(ledger: Ledger, client: redis.Redis) -> None:
    t = 4_000_000.0
    rec = shown(ledger, client, "fay", ["a", "b"], t)
    first = ledger.attribute_sync(client, Purchase("e1", "fay", "a", rec), now=t + 1)
    for _ in range(3):
        retry = ledger.attribute_sync(client, Purchase("e1", "fay", "a", rec), now=t + 2)
        assert first is not None and retry == dataclasses.replace(first, first=False)
    # An event credited to nobody stays so, even once an impression could match it.
    assert ledger.attribute_sync(client, Purchase("e2", "fay", "c"), now=t + 3) is None
    shown(ledger, client, "fay", ["c"], t + 4)
    assert ledger.attribute_sync(client, Purchase("e2", "fay", "c"), now=t + 5) is None
    counts = ledger.counts_sync(client, two_arms())["treatment"]
    assert (counts.conversions, counts.purchases) == (1, 1)


def test_the_hot_path_connection_records_and_attributes_atomically(
    ledger: Ledger, client: redis.Redis, url: str
) -> None:
    experiment = two_arms()
    client.script_flush()  # the first attribution loads the script (NOSCRIPT, then EVAL)

    async def run() -> None:
        hot = MultiplexedRedis(url, timeout_s=5)
        try:
            rec = new_recommendation_id()
            await ledger.record_impression(hot, Impression(rec, "exp", "control", "gus", ["a"]))
            # Twenty concurrent deliveries of one event: one is first, all agree.
            got = await asyncio.gather(
                *(ledger.attribute(hot, Purchase("e1", "gus", "a", rec)) for _ in range(20))
            )
            assert sum(1 for g in got if g is not None and g.first) == 1
            assert {(g.variant, g.recommendation_id) for g in got if g is not None} == {
                ("control", rec)
            }
            assert len([g for g in got if g is not None]) == 20
            counts = await ledger.counts(hot, experiment)
            assert counts == ledger.counts_sync(client, experiment)
            assert counts["control"] == VariantCounts(1, 1, 1, 1)
        finally:
            await hot.aclose()

    asyncio.run(run())


def test_an_impression_is_one_round_trip_and_a_customer_index_stays_bounded(
    ledger: Ledger, client: redis.Redis
) -> None:
    impression = Impression(new_recommendation_id(), "exp", "control", "hal", ["a", "b"])
    commands = ledger.impression_commands(impression, now=5_000_000.0)
    assert len(commands) == 3  # sent in one write by either transport
    for i in range(MAX_SEEN + 20):
        shown(ledger, client, "hal", [f"a{i}"], 5_000_000.0 + i, variant="control")
    assert client.zcard(keys.experiment_seen("hal")) == MAX_SEEN
    assert client.hlen(keys.experiment_impressions("hal")) == MAX_SEEN
    counts = ledger.counts_sync(client, two_arms())["control"]
    assert (counts.impressions, counts.customers) == (MAX_SEEN + 20, 1)
    Ledger.reset(client, two_arms())
    assert ledger.counts_sync(client, two_arms())["control"] == VariantCounts()


# --- statistics -------------------------------------------------------------------------


def planted(rates: tuple[float, float], n: int, seed: int) -> dict[str, VariantCounts]:
    rng = np.random.default_rng(seed)
    conversions = [int((rng.random(n) < rate).sum()) for rate in rates]
    return {
        name: VariantCounts(impressions=n, conversions=c, purchases=c, customers=n)
        for name, c in zip(("control", "treatment"), conversions, strict=True)
    }


def test_a_true_difference_is_found() -> None:
    result = report(two_arms(), planted((0.05, 0.06), 20_000, seed=1))
    treatment = result.variants[1]
    assert treatment.p_value is not None and treatment.p_value < 0.01
    assert treatment.difference_interval is not None
    assert treatment.difference_interval.lower > 0
    assert treatment.significant and result.winner == "treatment"
    assert treatment.difference == pytest.approx(0.01, abs=0.005)
    assert treatment.relative_lift == pytest.approx(0.2, abs=0.1)
    # The numbers are scipy's.
    control = result.variants[0]
    assert control.conversion is not None and treatment.conversion is not None
    pooled = (control.conversions + treatment.conversions) / 40_000
    z = (treatment.conversion - control.conversion) / math.sqrt(pooled * (1 - pooled) * 2 / 20_000)
    assert treatment.z == pytest.approx(z) and treatment.p_value == pytest.approx(2 * norm.sf(z))


def test_equal_rates_are_mostly_not_significant() -> None:
    p_values = [
        report(two_arms(), planted((0.05, 0.05), 20_000, seed)).variants[1].p_value
        for seed in range(20)
    ]
    assert all(p is not None for p in p_values)
    assert sum(1 for p in p_values if p is not None and p > 0.05) >= 17


def test_the_intervals_match_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 - 48/80, method 10.
    interval = newcombe(48, 80, 56, 70, Z95)
    assert interval is not None
    assert (round(interval.lower, 4), round(interval.upper, 4)) == (0.0524, 0.3339)
    zero = wilson(0, 10, Z95)
    assert zero is not None and zero.lower == 0 and round(zero.upper, 4) == 0.2775


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} in a report")


def test_zero_counts_give_none_never_nan() -> None:
    experiment = two_arms(shares=(0.4, 0.3, 0.3))
    cases = [
        {},
        {"control": VariantCounts(100, 0, 0, 90), "treatment": VariantCounts(100, 0, 0, 95)},
        {"control": VariantCounts(0, 0, 0, 0), "treatment": VariantCounts(50, 5, 5, 50)},
        {"control": VariantCounts(10, 10, 10, 10), "treatment": VariantCounts(10, 10, 12, 10)},
    ]
    for counts in cases:
        result = report(experiment, counts)
        text = result.model_dump_json()
        json.loads(text, parse_constant=_refuse)  # NaN and Infinity are not JSON
        assert result.winner is None
        assert all(v.p_value is None and not v.significant for v in result.variants)
    assert z_test(0, 0, 1, 1) is None
    assert report(experiment, {}).variants[2].conversion_interval is None


def test_several_variants_share_alpha() -> None:
    # p ~ 0.03: significant alone, not when one of two comparisons (alpha 0.025 each).
    counts = {
        "control": VariantCounts(10_000, 500, 500, 0),
        "treatment": VariantCounts(10_000, 565, 565, 0),
    }
    alone = report(two_arms(), counts).variants[1]
    assert alone.p_value is not None and 0.025 < alone.p_value < 0.05 and alone.significant
    two = report(
        two_arms(shares=(0.4, 0.3, 0.3)), {**counts, "third": VariantCounts(10_000, 500, 500, 0)}
    )
    assert two.comparisons == 2 and not two.variants[1].significant and two.winner is None


# --- end to end: the ledger's counts, the report, and Prometheus --------------------------


def test_a_better_variant_wins_and_prometheus_shows_the_report(
    ledger: Ledger, client: redis.Redis
) -> None:
    experiment = two_arms("e2e")
    experiments = Experiments(experiments=[experiment])
    rng = np.random.default_rng(3)
    buy_rate = {"control": 0.04, "treatment": 0.12}
    t = 6_000_000.0
    for i in range(3_000):
        customer = f"cust-{i}"
        variant = assign(experiment, customer).name
        articles = [f"art-{j}" for j in rng.choice(500, size=10, replace=False)]
        rec = shown(ledger, client, customer, articles, t + i, variant=variant, experiment="e2e")
        if rng.random() < buy_rate[variant]:
            # Half the clients pass the recommendation id back, half do not.
            named = rec if i % 2 else None
            got = ledger.attribute_sync(
                client, Purchase(f"ev-{i}", customer, articles[3], named), now=t + i + 5
            )
            assert got is not None and got.variant == variant
    counts = ledger.counts_sync(client, experiment)
    result = report(experiment, counts)
    assert sum(v.impressions for v in result.variants) == 3_000
    assert result.winner == "treatment"
    assert result.variants[0].customers == pytest.approx(result.variants[0].impressions, rel=0.03)

    registry = CollectorRegistry()
    registry.register(ExperimentsCollector(client, experiments, ledger))
    assert registry.get_sample_value("experiment_ledger_up") == 1
    assert registry.get_sample_value("experiment_enabled", {"experiment": "e2e"}) == 1
    for v in result.variants:
        labels = {"experiment": "e2e", "variant": v.name}
        assert registry.get_sample_value("experiment_impressions_total", labels) == v.impressions
        assert registry.get_sample_value("experiment_conversions_total", labels) == v.conversions
        assert registry.get_sample_value("experiment_purchases_total", labels) == v.purchases
        assert registry.get_sample_value("experiment_exposed_customers", labels) == v.customers
        assert registry.get_sample_value("experiment_conversion_rate", labels) == v.conversion
        assert registry.get_sample_value("experiment_p_value", labels) == v.p_value
        interval = v.difference_interval
        assert registry.get_sample_value("experiment_conversion_difference_lower", labels) == (
            interval and interval.lower
        )


def test_prometheus_without_redis_says_so_and_does_not_fail(ledger: Ledger) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    registry = CollectorRegistry()
    registry.register(ExperimentsCollector(dead, Experiments(experiments=[two_arms()]), ledger))
    assert registry.get_sample_value("experiment_ledger_up") == 0
    assert (
        registry.get_sample_value(
            "experiment_impressions_total", {"experiment": "exp", "variant": "control"}
        )
        is None
    )


def test_one_replica_of_several_exports_the_totals_and_another_takes_over(
    client: redis.Redis, ledger: Ledger
) -> None:
    """Every replica reads the same totals from Redis: only the lease's holder exports
    them, so a sum over the replicas' series is the total; when it stops scraping,
    another takes over once the lease expires."""
    experiments = Experiments(experiments=[two_arms()])
    shown(ledger, client, "cust-lease", ["a", "b"], 1_000.0, variant="control", experiment="exp")
    client.delete(keys.METRICS_EXPORTER)
    replicas = []
    for name in ("pod-a", "pod-b"):
        registry = CollectorRegistry()
        lease = ExportLease(client, name, ttl_s=0.5)
        registry.register(ExperimentsCollector(client, experiments, ledger, lease=lease))
        replicas.append(registry)
    labels = {"experiment": "exp", "variant": "control"}

    def exported(registry: CollectorRegistry) -> float | None:
        return registry.get_sample_value("experiment_impressions_total", labels)

    assert [exported(r) for r in replicas] == [1, None]
    assert [r.get_sample_value("experiment_metrics_exporter") for r in replicas] == [1, 0]
    assert [r.get_sample_value("experiment_ledger_up") for r in replicas] == [1, 1]
    assert [exported(r) for r in replicas] == [1, None], "the holder's scrapes renew it"
    time.sleep(0.6)  # pod-a stops scraping: its lease runs out
    assert exported(replicas[1]) == 1
    assert exported(replicas[0]) is None
    client.delete(keys.METRICS_EXPORTER)
