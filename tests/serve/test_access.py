"""Access and limits on the real app and the suite's Valkey: keys by role (401, 403, the
right role admitted), keyed reads, keys held only as hashes, rate limits shared by two
app instances, the body limit, and no key, hash or customer id in the logs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from batch.pipeline import BatchReport
from recsys.api_keys import ApiKey, digest, new_key
from recsys.keys import experiment_impressions
from recsys.settings import Settings
from recsys_cli.worker_commands import UVICORN_OPTIONS
from serve.app import create_app
from support import TcpProxy, counter, serving, wait_for

EVENTS_KEY, EVENTS_ENTRY = new_key(f"shop-{uuid.uuid4().hex[:6]}", "events")
ADMIN_KEY, ADMIN_ENTRY = new_key(f"ops-{uuid.uuid4().hex[:6]}", "admin")
READ_KEY, READ_ENTRY = new_key(f"support-{uuid.uuid4().hex[:6]}", "read")
METRICS_KEY, METRICS_ENTRY = new_key(f"prometheus-{uuid.uuid4().hex[:6]}", "metrics")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keyed(settings: Settings, *entries: ApiKey, **update: object) -> Settings:
    """The suite's settings with keys enforced (the suite itself runs with writes open)."""
    keys = list(entries) or [EVENTS_ENTRY, ADMIN_ENTRY, READ_ENTRY, METRICS_ENTRY]
    return settings.model_copy(update={"auth_disabled": False, "api_keys": keys, **update})


def scrape(client: TestClient) -> str:
    """/metrics, with the metrics key it needs by default."""
    response = client.get("/metrics", headers=bearer(METRICS_KEY))
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
def article(transactions: pd.DataFrame) -> str:
    return str(transactions["article_id"].value_counts().index[0])


@pytest.fixture(scope="module")
def keyed_api(settings: Settings, trained: BatchReport) -> Iterator[TestClient]:
    """The app with a key of each role, public reads open (the default)."""
    with TestClient(create_app(keyed(settings))) as client:
        yield client


def purchase(customer: str, article: str) -> dict[str, str]:
    return {"customer_id": customer, "article_id": article}


def test_writes_without_a_key_or_with_an_unknown_one_are_401(
    keyed_api: TestClient, article: str
) -> None:
    body = purchase("c-access-1", article)
    for headers in (
        {},
        bearer("rsk_not-a-key"),
        {"X-API-Key": "rsk_not-a-key"},
        {"Authorization": f"Basic {EVENTS_KEY}"},  # not a bearer token: no key given
    ):
        for method, path, sent in (
            ("POST", "/events/purchase", body),
            ("POST", "/admin/models/rollback", None),
            ("POST", "/admin/models/v1/promote", None),
        ):
            response = keyed_api.request(method, path, json=sent, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    metrics = scrape(keyed_api)
    assert counter(metrics, "auth_failures_total", reason="missing") >= 6
    assert counter(metrics, "auth_failures_total", reason="unknown") >= 6


def test_an_events_key_may_not_administer(keyed_api: TestClient) -> None:
    for path in ("/admin/models/rollback", "/admin/models/v1/promote"):
        response = keyed_api.post(path, headers=bearer(EVENTS_KEY))
        assert response.status_code == 403, response.text
        assert "needs admin" in response.json()["detail"]
    # The other admin writes refuse it too: the catalogue and erasure.
    assert keyed_api.post("/items", json=[], headers=bearer(EVENTS_KEY)).status_code == 403
    sold_out = [{"article_id": "a1", "available": False}]
    for headers in ({}, bearer(EVENTS_KEY)):
        response = keyed_api.post("/items/availability", json=sold_out, headers=headers)
        assert response.status_code == (403 if headers else 401)
    assert keyed_api.delete("/users/c-access-x", headers=bearer(EVENTS_KEY)).status_code == 403
    assert counter(scrape(keyed_api), "auth_failures_total", reason="forbidden") >= 5


def test_the_right_role_is_admitted(
    keyed_api: TestClient, article: str, trained: BatchReport
) -> None:
    body = purchase("c-access-2", article)
    assert (
        keyed_api.post("/events/purchase", json=body, headers=bearer(EVENTS_KEY)).status_code == 202
    )
    by_header = keyed_api.post("/events/purchase", json=body, headers={"X-API-Key": EVENTS_KEY})
    assert by_header.status_code == 202
    # admin may post events too
    assert (
        keyed_api.post("/events/purchase", json=body, headers=bearer(ADMIN_KEY)).status_code == 202
    )
    # Promoting the live version again replays nothing new and keeps it live.
    live = trained.version
    promoted = keyed_api.post(f"/admin/models/{live}/promote", headers=bearer(ADMIN_KEY))
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["live_version"] == live
    unknown = keyed_api.post("/admin/models/v19990101T000000000/promote", headers=bearer(ADMIN_KEY))
    assert unknown.status_code == 404
    for bad in ("..", "v1.old", "x" * 65):
        response = keyed_api.post(f"/admin/models/{bad}/promote", headers=bearer(ADMIN_KEY))
        assert response.status_code in (404, 422), (bad, response.status_code)
    assert keyed_api.get("/models").json()["version"] == live


def test_public_reads_are_open_by_default(
    keyed_api: TestClient, known_customer: str, article: str
) -> None:
    for path in (f"/recommend/{known_customer}", f"/items/{article}/similar", "/popular",
                 "/models", "/experiments", "/", "/ui/static/app.js"):  # fmt: skip
        assert keyed_api.get(path).status_code == 200, path
        # Open reads without an anonymous limit (the suite's) are not checked at all: a
        # key sent with one is not looked at.
        assert keyed_api.get(path, headers=bearer("rsk_not-a-key")).status_code == 200, path


def _refusals(api: TestClient, path: str, **params: object) -> None:
    """No key: 401 saying a read key is needed; an events key: 403 saying so."""
    missing = api.get(path, params=params)
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "read role" in missing.json()["detail"]
    forbidden = api.get(path, params=params, headers=bearer(EVENTS_KEY))
    assert forbidden.status_code == 403, forbidden.text
    assert "has the role events" in forbidden.json()["detail"]
    assert "read role" in forbidden.json()["detail"]


def test_a_profile_needs_a_key_granting_read(keyed_api: TestClient, known_customer: str) -> None:
    path = f"/users/{known_customer}/profile"
    _refusals(keyed_api, path)
    for headers in (bearer(READ_KEY), {"X-API-Key": ADMIN_KEY}):
        response = keyed_api.get(path, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["customer_id"] == known_customer
    # An unknown key is 401 as ever; a read key may not write.
    assert keyed_api.get(path, headers=bearer("rsk_not-a-key")).status_code == 401
    assert keyed_api.delete("/users/c-access-r", headers=bearer(READ_KEY)).status_code == 403


def test_explanations_need_a_read_key_and_plain_lists_stay_open(
    keyed_api: TestClient, known_customer: str
) -> None:
    path = f"/recommend/{known_customer}"
    _refusals(keyed_api, path, explain="true")
    explained = keyed_api.get(path, params={"explain": "true"}, headers=bearer(READ_KEY))
    assert explained.status_code == 200, explained.text
    assert all(item["explanation"] is not None for item in explained.json()["items"])
    plain = keyed_api.get(path)
    assert plain.status_code == 200
    assert all(item["explanation"] is None for item in plain.json()["items"])


def test_the_page_s_customer_list_needs_a_read_key(keyed_api: TestClient) -> None:
    _refusals(keyed_api, "/ui/customers")
    listed = keyed_api.get("/ui/customers", headers=bearer(READ_KEY))
    assert listed.status_code == 200
    assert listed.json()["customer_ids"]
    # The page itself holds no data: served to anyone, whatever the settings.
    assert keyed_api.get("/").status_code == 200


def test_public_reads_need_a_key_when_the_setting_says_so(
    settings: Settings, trained: BatchReport, known_customer: str
) -> None:
    with TestClient(create_app(keyed(settings, public_reads_require_key=True))) as api:
        path = f"/recommend/{known_customer}"
        for headers in ({}, bearer("rsk_not-a-key")):
            response = api.get(path, headers=headers)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert api.get(path, headers=bearer(EVENTS_KEY)).status_code == 200
        assert api.get("/popular", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        assert api.get("/models").status_code == 401
        assert api.get("/").status_code == 200  # the page asks for its key itself
        # Any key admits the public reads; customers' data still needs read.
        profile = f"/users/{known_customer}/profile"
        assert api.get(profile, headers=bearer(EVENTS_KEY)).status_code == 403
        assert api.get(profile, headers=bearer(READ_KEY)).status_code == 200
        # Probes stay open; the schema says how to authenticate.
        assert api.get("/health/live").status_code == 200
        schemes = api.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {"bearer", "apiKey"} <= set(schemes)
        # A route of a keyed public router that needs a role too (erasure): the public
        # check admits the key, the role check refuses it.
        assert api.delete("/users/c-access-x", headers=bearer(EVENTS_KEY)).status_code == 403


def test_with_no_key_configured_writes_are_refused(
    settings: Settings, trained: BatchReport, article: str
) -> None:
    closed = settings.model_copy(update={"auth_disabled": False, "api_keys": []})
    with TestClient(create_app(closed)) as api:
        response = api.post("/events/purchase", json=purchase("c-access-3", article))
        assert response.status_code == 401
        assert "no API key is configured" in response.json()["detail"]
        assert api.post("/admin/models/rollback").status_code == 401
        assert api.get("/popular").status_code == 200


def test_the_app_holds_only_the_keys_hashes(keyed_api: TestClient, article: str) -> None:
    assert (
        keyed_api.post(
            "/events/purchase", json=purchase("c-access-4", article), headers=bearer(EVENTS_KEY)
        ).status_code
        == 202
    )
    state = keyed_api.app.state  # type: ignore[attr-defined]
    held = " ".join(
        [state.recsys.settings.model_dump_json(), repr(vars(state.access)), repr(vars(state))]
    )
    for key in (EVENTS_KEY, ADMIN_KEY):
        assert key not in held
        assert digest(key) in held


def test_rate_limit_is_shared_by_two_instances_on_one_redis(
    settings: Settings, trained: BatchReport, article: str
) -> None:
    """Two apps on the same Redis stand in for two worker processes."""
    key, entry = new_key(f"limited-{uuid.uuid4().hex[:6]}", "events")
    other, other_entry = new_key(f"other-{uuid.uuid4().hex[:6]}", "events")
    own = keyed(settings, entry, other_entry, METRICS_ENTRY,
                rate_limit_events_per_s=0.5, rate_limit_events_burst=3)  # fmt: skip
    body = purchase("c-access-5", article)
    with TestClient(create_app(own)) as one, TestClient(create_app(own)) as two:
        codes = [
            client.post("/events/purchase", json=body, headers=bearer(key)).status_code
            for client in (one, two, one)
        ]
        assert codes == [202, 202, 202]
        for client in (two, one):
            refused = client.post("/events/purchase", json=body, headers=bearer(key))
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["Retry-After"]) <= 2  # one request per 2 s
        # Each key has its own bucket.
        assert one.post("/events/purchase", json=body, headers=bearer(other)).status_code == 202
        for client in (one, two):
            assert counter(scrape(client), "rate_limited_total", role="events") == 1


def test_rate_limiter_lets_requests_through_when_redis_is_down(
    settings: Settings, trained: BatchReport, article: str
) -> None:
    assert settings.redis_url
    target = urlparse(settings.redis_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 6379))
    own = keyed(
        settings,
        redis_url=proxy.url_for(settings.redis_url),
        redis_timeout_s=0.3,
    )
    try:
        with TestClient(create_app(own)) as api:
            body = purchase("c-access-6", article)
            assert (
                api.post("/events/purchase", json=body, headers=bearer(EVENTS_KEY)).status_code
                == 202
            )
            proxy.set_mode("refuse")
            response = api.post("/events/purchase", json=body, headers=bearer(EVENTS_KEY))
            assert response.status_code == 202, response.text
            assert counter(scrape(api), "rate_limiter_unavailable_total") >= 1
            proxy.set_mode("forward")
    finally:
        proxy.close()


@pytest.fixture
def small_bodies(settings: Settings, trained: BatchReport) -> Iterator[str]:
    """The keyed app behind uvicorn, with a 4 KiB body limit."""
    with serving(create_app(keyed(settings, max_body_bytes=4096))) as url:
        yield url


@pytest.fixture
def uvicorn_logging() -> Iterator[None]:
    """uvicorn configures its loggers for the whole process, with handlers on the streams
    of the moment (a test's capture): put them back as they were."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = [
        (logger, logger.level, list(logger.handlers), logger.propagate)
        for logger in map(logging.getLogger, names)
    ]
    yield
    for logger, level, handlers, propagate in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


def test_an_oversized_body_is_413_with_or_without_content_length(
    small_bodies: str, article: str
) -> None:
    headers = {**bearer(EVENTS_KEY), "Content-Type": "application/json"}
    url = f"{small_bodies}/events/purchase"
    padded = b'{"customer_id": "c-access-7", "pad": "' + b"x" * 5000 + b'"}'
    declared = httpx.post(url, content=padded, headers=headers, timeout=10)
    assert declared.status_code == 413, declared.text

    def chunks(body: bytes, size: int = 1024) -> Iterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    streamed = httpx.post(url, content=chunks(padded), headers=headers, timeout=10)
    assert streamed.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in streamed.request.headers
    assert streamed.status_code == 413, streamed.text
    # A streamed body under the limit goes through.
    valid = json.dumps(purchase("c-access-7", article)).encode()
    small = httpx.post(url, content=chunks(valid, 16), headers=headers, timeout=10)
    assert small.status_code == 202, small.text
    # Counted as what they were, by route.
    metrics = httpx.get(f"{small_bodies}/metrics", headers=bearer(METRICS_KEY), timeout=10).text
    count = "http_request_duration_seconds_count"
    assert counter(metrics, count, method="POST", route="/events/purchase", status="413") == 2


def test_no_key_hash_or_customer_id_is_logged_at_info(
    settings: Settings,
    trained: BatchReport,
    known_customer: str,
    article: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    uvicorn_logging: None,
) -> None:
    """The server as `recsys serve` runs it, with its logs turned up to INFO: what the
    app logs (caplog) and what uvicorn's own handlers print (capfd)."""
    caplog.set_level(logging.INFO)
    buyer = f"log-probe-{uuid.uuid4().hex}"
    app = create_app(keyed(settings))
    with (
        serving(app, **{**UVICORN_OPTIONS, "log_level": "info"}) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        events, admin = bearer(EVENTS_KEY), {"X-API-Key": ADMIN_KEY}
        assert http.get(f"/recommend/{known_customer}", headers=events).status_code == 200
        assert http.get(f"/users/{known_customer}/profile", headers=admin).status_code == 200
        # A purchase by a customer of its own: the suite's known customers keep their
        # purchase counts (later tests' updaters consume the whole topic).
        accepted = http.post("/events/purchase", json=purchase(buyer, article), headers=events)
        assert accepted.status_code == 202
        assert http.get(f"/recommend/{known_customer}", params={"k": 0}).status_code == 422
        assert http.post("/admin/models/rollback", headers=events).status_code == 403
        unknown = http.post("/events/purchase", json=purchase(buyer, article),
                            headers=bearer(EVENTS_KEY[:-2] + "xx"))  # fmt: skip
        assert unknown.status_code == 401
    printed = capfd.readouterr()
    # httpx's lines are this test's client, not the API (the CLI keeps httpx at WARNING).
    server_side = [r for r in caplog.records if not r.name.startswith("httpx")]
    logged = "\n".join(record.getMessage() for record in server_side)
    everything = "\n".join([printed.out, printed.err, logged])
    assert "Application startup complete" in everything  # uvicorn's INFO lines were caught
    secrets = (EVENTS_KEY, ADMIN_KEY, digest(EVENTS_KEY), digest(ADMIN_KEY), known_customer, buyer)
    for secret in secrets:
        assert secret not in everything
    assert EVENTS_KEY[:-2] not in everything


@pytest.fixture(scope="module")
def experiment_keyed_api(
    settings: Settings, trained: BatchReport, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, str]]:
    """The keyed app with a running experiment (its counters named for this module)."""
    name = f"access-{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("access-experiments") / "experiments.json"
    variants = [{"name": "control", "share": 0.5}, {"name": "other", "share": 0.5}]
    path.write_text(json.dumps({"experiments": [{"name": name, "variants": variants}]}))
    with TestClient(create_app(keyed(settings, experiments_file=path))) as client:
        yield client, name


def _impressions(api: TestClient, experiment: str) -> int:
    report = api.get(f"/experiments/{experiment}").json()
    return sum(variant["impressions"] for variant in report["variants"])


def test_an_anonymous_impression_of_an_invented_customer_is_not_recorded(
    experiment_keyed_api: tuple[TestClient, str], known_customer: str, redis_conn: redis.Redis
) -> None:
    api, experiment = experiment_keyed_api
    invented = f"invented-{uuid.uuid4().hex}"
    before = _impressions(api, experiment)
    body = api.get(f"/recommend/{invented}").json()
    # The customer is still in an arm (its knobs apply); nothing is written for it.
    assert body["experiment"] == experiment and body["variant"] in {"control", "other"}
    assert body["recommendation_id"] is None
    assert not redis_conn.exists(experiment_impressions(invented))
    assert _impressions(api, experiment) == before
    # A known customer's impression is recorded without a key; a keyed call's for any id.
    assert api.get(f"/recommend/{known_customer}").json()["recommendation_id"]
    keyed_call = api.get(f"/recommend/{invented}", headers=bearer(EVENTS_KEY)).json()
    assert keyed_call["recommendation_id"]
    assert redis_conn.exists(experiment_impressions(invented))
    assert _impressions(api, experiment) == before + 2


def _address() -> tuple[str, int]:
    """A client address of its own: buckets live in the suite's shared Redis."""
    return (f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}", 4000)


def test_the_anonymous_limit_is_on_by_default_and_per_client_address(
    settings: Settings, trained: BatchReport
) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.rate_limit_anonymous_per_s > 0 and defaults.rate_limit_anonymous_burst > 0
    # The behaviour at a limit a loaded machine's requests cannot outpace by refilling
    # (at the default 20/s a request taking 50 ms would never meet it).
    burst = 6
    limited = keyed(settings, rate_limit_anonymous_per_s=0.5, rate_limit_anonymous_burst=burst)
    app = create_app(limited)
    with TestClient(app, client=_address()) as one:
        codes = [one.get("/popular", params={"k": 1}).status_code for _ in range(burst * 2)]
        # The burst goes through at once, then the sustained rate: some are refused.
        assert codes[: burst // 2] == [200] * (burst // 2)
        assert 429 in codes, codes
        refused = one.get("/popular", params={"k": 1})
        assert refused.status_code == 429
        assert "rate limit" in refused.json()["detail"] and refused.headers["Retry-After"]
        # A key is counted against its own role's limit, not the address's.
        assert one.get("/popular", headers=bearer(READ_KEY)).status_code == 200
        assert counter(scrape(one), "rate_limited_total", role="anonymous") >= 1
    # Another address has a bucket of its own: the limit is never one for all visitors.
    with TestClient(create_app(limited), client=_address()) as two:
        assert two.get("/popular", params={"k": 1}).status_code == 200


def test_open_writes_take_any_caller_s_writes_but_never_open_customers_data(
    settings: Settings, trained: BatchReport, known_customer: str, article: str
) -> None:
    """`recsys up` and `recsys demo` on loopback: the page posts with its read key."""
    with TestClient(create_app(keyed(settings, open_writes=True))) as api:
        body = purchase("c-access-open", article)
        assert api.post("/events/purchase", json=body).status_code == 202
        assert api.post("/events/purchase", json=body, headers=bearer(READ_KEY)).status_code == 202
        profile = f"/users/{known_customer}/profile"
        assert api.get(profile).status_code == 401
        assert api.get(profile, headers=bearer(READ_KEY)).status_code == 200


# --- /metrics behind a key ---------------------------------------------------------------


def test_metrics_needs_a_key_granting_metrics(keyed_api: TestClient) -> None:
    missing = keyed_api.get("/metrics")
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "role metrics" in missing.json()["detail"]
    assert keyed_api.get("/metrics", headers=bearer("rsk_not-a-key")).status_code == 401
    for other in (EVENTS_KEY, READ_KEY):
        assert keyed_api.get("/metrics", headers=bearer(other)).status_code == 403
    for granted in (METRICS_KEY, ADMIN_KEY):
        response = keyed_api.get("/metrics", headers=bearer(granted))
        assert response.status_code == 200
        assert "http_request_duration_seconds" in response.text
    # A metrics key, all a Prometheus holds, grants no customer's data and no write.
    prometheus = bearer(METRICS_KEY)
    assert keyed_api.get("/users/c-access-m/profile", headers=prometheus).status_code == 403
    assert keyed_api.post("/admin/models/rollback", headers=prometheus).status_code == 403


def test_metrics_is_open_when_the_setting_says_so_or_writes_are_open(
    settings: Settings, trained: BatchReport
) -> None:
    with TestClient(create_app(keyed(settings, metrics_require_key=False))) as api:
        assert api.get("/metrics").status_code == 200
    # `recsys up` and `recsys demo` on loopback with no key configured.
    with TestClient(create_app(keyed(settings, open_writes=True))) as api:
        assert api.get("/metrics").status_code == 200
    closed = settings.model_copy(update={"auth_disabled": False, "api_keys": []})
    with TestClient(create_app(closed)) as api:
        refused = api.get("/metrics")
        assert refused.status_code == 401
        assert "no API key is configured" in refused.json()["detail"]


# --- expiry and rotation -----------------------------------------------------------------


def test_an_expired_key_is_refused_saying_it_expired(
    settings: Settings, trained: BatchReport, article: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    old, old_entry = new_key(f"old-{uuid.uuid4().hex[:6]}", "events", now - timedelta(seconds=1))
    soon, soon_entry = new_key(f"soon-{uuid.uuid4().hex[:6]}", "events", now + timedelta(days=3))
    body = purchase("c-access-exp", article)
    with caplog.at_level(logging.WARNING, logger="serve.access"):
        app = create_app(keyed(settings, old_entry, soon_entry, METRICS_ENTRY))
    with TestClient(app) as api:
        refused = api.post("/events/purchase", json=body, headers=bearer(old))
        assert refused.status_code == 401, refused.text
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "expired at" in refused.json()["detail"]
        assert old_entry.name in refused.json()["detail"]
        assert api.post("/events/purchase", json=body, headers=bearer(soon)).status_code == 202
        metrics = scrape(api)
    assert counter(metrics, "auth_failures_total", reason="expired") == 1
    name = "api_key_expiry_timestamp_seconds"
    expiry = counter(metrics, name, key=soon_entry.name, role="events")
    assert soon_entry.expires is not None
    assert expiry == pytest.approx(soon_entry.expires.timestamp())
    warned = caplog.text
    assert f"{soon_entry.name!r} expires at" in warned
    assert f"{old_entry.name!r} expired at" in warned
    assert soon not in warned and old not in warned


def _write_keys(path: Path, *entries: ApiKey) -> None:
    """As an operator's tool should: a whole new file moved into place."""
    staged = path.with_suffix(".new")
    staged.write_text(json.dumps([entry.entry() for entry in entries]))
    staged.replace(path)


def test_keys_from_the_keys_file_rotate_without_a_restart(
    settings: Settings, trained: BatchReport, article: str, tmp_path: Path
) -> None:
    path = tmp_path / "api-keys.json"
    first, first_entry = new_key(f"shop-a-{uuid.uuid4().hex[:6]}", "events")
    second, second_entry = new_key(f"shop-b-{uuid.uuid4().hex[:6]}", "events")
    _write_keys(path, first_entry)
    interval = 0.3
    own = keyed(settings, METRICS_ENTRY, api_keys_file=path, api_keys_reload_interval_s=interval)
    body = purchase("c-access-rot", article)

    def status(api: TestClient, key: str) -> int:
        return api.post("/events/purchase", json=body, headers=bearer(key)).status_code

    with TestClient(create_app(own)) as api:
        assert status(api, first) == 202
        assert status(api, second) == 401
        # Step 1: the new key beside the old one; accepted within the reload interval.
        _write_keys(path, first_entry, second_entry)
        started = time.monotonic()
        wait_for(lambda: status(api, second) == 202, timeout=10 * interval)
        assert time.monotonic() - started < 3 * interval + 1
        assert status(api, first) == 202
        # A broken save changes nothing, and is counted.
        path.write_text("[{")
        wait_for(lambda: counter(scrape(api), "api_keys_reload_failures_total") >= 1, 10)
        assert status(api, first) == 202 and status(api, second) == 202
        # Step 2: the old key removed: refused as unknown, the new one still accepted.
        _write_keys(path, second_entry)
        wait_for(lambda: status(api, first) == 401, timeout=10 * interval)
        assert api.post("/events/purchase", json=body,
                        headers=bearer(first)).json()["detail"] == "unknown API key"  # fmt: skip
        assert status(api, second) == 202


def test_a_bad_keys_file_stops_the_start_naming_the_file(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "api-keys.json"
    path.write_text(json.dumps([{"name": "shop", "role": "events", "sha256": "nope"}]))
    with pytest.raises(ValueError, match=r"api-keys.json: \[0\]\.sha256"):
        create_app(keyed(settings, api_keys_file=path))
    # The same name in the file and in RECSYS_API_KEYS: one bucket for two keys.
    _write_keys(path, EVENTS_ENTRY.model_copy(update={"sha256": "0" * 64}))
    with pytest.raises(ValueError, match="same name as one in RECSYS_API_KEYS"):
        create_app(keyed(settings, api_keys_file=path))
    with pytest.raises(ValueError, match="cannot read it"):
        create_app(keyed(settings, api_keys_file=tmp_path / "missing.json"))
