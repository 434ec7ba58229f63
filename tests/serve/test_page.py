"""The demo page (src/serve/routes/page.py, src/serve/static): served files and the example
customers over the TestClient; the page itself in headless Chromium (Debian's, driven by
Playwright) against the real app behind uvicorn, the suite's engines and the real updater."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from batch.pipeline import BatchReport
from recsys import keys
from recsys.api_keys import new_key
from recsys.bus import wait_drained
from recsys.settings import Settings
from serve.app import create_app
from support import running_updater, serving

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium reaches for the network (closed here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A marker, not a fixture: the skip comes before the engines and the model are set up.
needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no browser: the page is tested in Debian's Chromium at {CHROMIUM} "
    "(apt-get install chromium); Playwright's own browser download is not used",
)
# The page gives up on a purchase after 5 s; the browser waits a bit longer than that.
WAIT_MS = 15_000
# Waits in the page are functions: the page's CSP forbids eval, which Playwright would use
# to poll an expression given as a string.
K = 10


# --- the API side: files and example customers -------------------------------------------


def test_the_page_and_its_files_are_served(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/ui/static/app.js" defer></script>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        served = api.get(f"/ui/static/{name}")
        assert served.status_code == 200
        assert served.headers["content-type"] == f"{media_type}; charset=utf-8"
        assert served.headers["x-content-type-options"] == "nosniff"
        assert len(served.content) > 1000
    for other in ("index.html", "page.py", "..%2Froutes%2Fpage.py", "app.js.map"):
        assert api.get(f"/ui/static/{other}").status_code == 404
    paths = api.get("/openapi.json").json()["paths"]
    assert "/ui/customers" in paths and "/" not in paths


def test_example_customers_have_a_vector_in_the_live_model(
    api: TestClient, redis_conn: redis.Redis, trained: BatchReport
) -> None:
    reply = api.get("/ui/customers", params={"limit": 5})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model_version"] == trained.version
    ids = body["customer_ids"]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert redis_conn.exists(*(keys.user_vector(trained.version, c) for c in ids)) == 5
    assert len(api.get("/ui/customers").json()["customer_ids"]) == 12
    for limit in (0, 51, -1):
        refused = api.get("/ui/customers", params={"limit": limit})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["query", "limit"]


# --- the page in the browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def api_url(settings: Settings, trained: BatchReport) -> Iterator[str]:
    """The real app behind uvicorn on a free loopback port, in a thread."""
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture
def updater(settings: Settings, redis_conn: redis.Redis) -> Iterator[None]:
    """The real updater in a thread, caught up with the topic before the test begins (the
    page waits only 5 s for an event, and the topic holds the suite's earlier events)."""
    assert settings.kafka_bootstrap_servers
    with running_updater(settings, redis_conn) as group:
        left = wait_drained(settings.kafka_bootstrap_servers, settings.events_topic, [group], 60)
        assert left == 0, f"the updater left {left} events unconsumed"
        yield


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A fresh tab and the errors its console and scripts report."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab, errors
    finally:
        context.close()


def _recommend(url: str, customer: str, **params: Any) -> dict[str, Any]:
    reply = httpx.get(f"{url}/recommend/{customer}", params={"k": K, **params}, timeout=10)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _shown(tab: Page, selector: str = "#cards .card") -> list[str]:
    ids: list[str] = tab.eval_on_selector_all(selector, "els => els.map(e => e.dataset.articleId)")
    return ids


def _wait_for_cards(tab: Page, expected: list[str]) -> None:
    """Until the cards on screen are these articles, in this order."""
    tab.wait_for_function(
        """ids => {
            const shown = [...document.querySelectorAll('#cards .card')]
                .map(e => e.dataset.articleId);
            return shown.length === ids.length && shown.every((id, i) => id === ids[i]);
        }""",
        arg=expected,
    )


def _expect_cards(tab: Page, url: str, customer: str, **params: Any) -> dict[str, Any]:
    """Until the page shows what the API recommends with these parameters; return that."""
    expected = _recommend(url, customer, **params)
    _wait_for_cards(tab, [i["article_id"] for i in expected["items"]])
    return expected


def _show(tab: Page, url: str, customer: str) -> dict[str, Any]:
    """Open the page, type the customer, submit; return what the API recommends."""
    tab.goto(url)
    tab.fill("#customer", customer)
    tab.click("#show")
    return _expect_cards(tab, url, customer)


def _card_fields(tab: Page) -> list[dict[str, str]]:
    fields: list[dict[str, str]] = tab.eval_on_selector_all(
        "#cards .card",
        """els => els.map(e => ({
            group: e.querySelector('.field.group .value').textContent,
            type: e.querySelector('.field.type .value').textContent,
            colour: e.querySelector('.field.colour .value').textContent,
            swatch: getComputedStyle(e.querySelector('.swatch')).backgroundColor,
            label: e.querySelector('.swatch-type').textContent,
        }))""",
    )
    return fields


def _customer(transactions: pd.DataFrame, rank: int) -> str:
    """A customer by purchase count; the purchasing tests take ranks no other test uses."""
    return str(transactions["customer_id"].value_counts().index[rank])


@needs_browser
def test_picking_a_customer_shows_cards_and_profile(
    page: tuple[Page, list[str]], api_url: str, known_customer: str
) -> None:
    tab, errors = page
    expected = _show(tab, api_url, known_customer)
    assert expected["source"] == "personalized"
    cards = _card_fields(tab)
    assert len(cards) == K
    for card, item in zip(cards, expected["items"], strict=True):
        meta = item["metadata"]
        assert card["group"] == meta["product_group_name"]
        assert card["type"] == card["label"] == meta["product_type_name"]
        assert card["colour"] == meta["colour_group_name"]
        assert card["swatch"].startswith("rgb(")  # a colour, not transparent
    black = [c["swatch"] for c in cards if c["colour"] == "Black"]
    assert all(s == "rgb(27, 27, 29)" for s in black)
    assert "Personalised" in (tab.text_content("#summary") or "")
    assert f"customer={known_customer}" in tab.url

    profile = httpx.get(f"{api_url}/users/{known_customer}/profile", timeout=10).json()
    tab.wait_for_selector("#profile .facts")
    facts = tab.inner_text("#profile .facts")
    assert str(profile["total_purchases"]) in facts
    assert tab.locator("#profile .recent li").count() == min(8, len(profile["recent_purchases"]))
    top = profile["top_product_groups"][0]["name"]
    assert tab.inner_text("#profile .groups .share-row >> nth=0").startswith(top)

    # The example list offers customers of the live model; one click shows one.
    example = tab.locator("#examples button.example").first
    chosen = example.inner_text()
    example.click()
    _expect_cards(tab, api_url, chosen)
    assert example.get_attribute("aria-pressed") == "true"
    assert errors == []


@needs_browser
def test_explanations_and_diversity_follow_their_controls(
    page: tuple[Page, list[str]], api_url: str, known_customer: str
) -> None:
    tab, errors = page
    _show(tab, api_url, known_customer)
    assert tab.locator("#cards .why").count() == 0
    tab.check("#explain")
    expect(tab.locator("#cards .card .why")).to_have_count(K, timeout=WAIT_MS)
    explained = _recommend(api_url, known_customer, explain="true")["items"]
    lines = tab.locator("#cards .card >> nth=0 >> .why li").all_inner_texts()
    cited = [part["article_id"] for part in explained[0]["explanation"]]
    shown = [re.fullmatch(r"\d+%\s+you bought (\S+)( \(.*\))?", line) for line in lines]
    assert [m.group(1) if m else line for m, line in zip(shown, lines, strict=True)] == cited
    tab.uncheck("#explain")
    expect(tab.locator("#cards .why")).to_have_count(0, timeout=WAIT_MS)

    tab.locator("#diversity").fill("0.6")
    _expect_cards(tab, api_url, known_customer, diversity_lambda=0.4)
    assert "λ 0.4" in (tab.text_content("#summary") or "")
    assert errors == []


@needs_browser
def test_a_product_group_filter_restricts_every_card(
    page: tuple[Page, list[str]], api_url: str, known_customer: str
) -> None:
    tab, errors = page
    expected = _show(tab, api_url, known_customer)
    usual = expected["items"][0]["metadata"]["product_group_name"]
    options = tab.eval_on_selector_all("#group option", "els => els.map(e => e.value)")
    other = next(g for g in options if g and g != usual)

    tab.select_option("#group", other)
    assert _expect_cards(tab, api_url, known_customer, product_group=other)["items"]
    assert {c["group"] for c in _card_fields(tab)} == {other}

    tab.select_option("#group", "")
    tab.select_option("#exclude", usual)
    _expect_cards(tab, api_url, known_customer, exclude_groups=usual)
    assert usual not in {c["group"] for c in _card_fields(tab)}
    assert errors == []


@needs_browser
def test_an_unknown_or_malformed_customer_is_explained_on_the_page(
    page: tuple[Page, list[str]], api_url: str
) -> None:
    tab, _ = page  # the API's 404 and 422 are logged to the console by the browser itself
    expected = _show(tab, api_url, "nobody-bought-anything")
    assert expected["source"] == "trending"
    reason = expected["fallback_reason"]
    expect(tab.locator("#summary")).to_contain_text(f"Trending (fallback: {reason})")
    expect(tab.locator("#profile")).to_have_text("No purchase known for this customer.")

    tab.fill("#customer", "no spaces allowed")
    tab.click("#show")
    expect(tab.locator("#status[data-kind='error']")).to_contain_text("customer_id")
    expect(tab.locator("#cards .card")).to_have_count(0)


@needs_browser
def test_a_purchase_the_updater_does_not_apply_is_reported_after_5_s(
    page: tuple[Page, list[str]], api_url: str, transactions: pd.DataFrame
) -> None:
    """No updater runs in this test: the page stops waiting and says why."""
    tab, errors = page
    expected = _show(tab, api_url, _customer(transactions, 31))
    tab.click("#cards .card >> nth=0 >> button.buy")
    status = tab.locator("#status[data-kind='error']")
    status.wait_for()
    assert "not applied within 5 s" in status.inner_text()
    assert _shown(tab) == [i["article_id"] for i in expected["items"]]
    assert tab.locator("#cards button.buy:disabled").count() == 0
    assert errors == []


@needs_browser
def test_buying_an_item_removes_it_once_the_updater_applied_the_event(
    page: tuple[Page, list[str]],
    api_url: str,
    updater: None,
    transactions: pd.DataFrame,
    redis_conn: redis.Redis,
) -> None:
    tab, errors = page
    customer = _customer(transactions, 30)
    before = [i["article_id"] for i in _show(tab, api_url, customer)["items"]]
    bought = before[1]
    tab.click(f"#cards .card[data-article-id='{bought}'] button.buy")

    tab.locator("#status[data-kind='applied']").wait_for()
    event_id = tab.get_attribute("#status", "data-event-id")
    assert event_id and event_id in tab.inner_text("#status")
    assert redis_conn.get(keys.last_event(customer)) == event_id.encode()
    shown = _shown(tab)
    assert bought not in shown and len(shown) == K
    after = _recommend(api_url, customer)
    assert after["applied_event_id"] == event_id
    assert shown == [i["article_id"] for i in after["items"]]
    # What came in is outlined; the profile lists the purchase first.
    new = _shown(tab, "#cards .card.new")
    assert set(new) == set(shown) - set(before) and new
    expect(tab.locator("#profile .recent li").first).to_contain_text(bought, timeout=WAIT_MS)
    assert errors == []


@pytest.fixture(scope="module")
def keyed_page_api(settings: Settings, trained: BatchReport) -> Iterator[tuple[str, str]]:
    """The app with keys enforced, as `recsys up` runs it on loopback: writes open, a read
    key minted for the page; its URL and that key."""
    key, entry = new_key(f"page-{uuid.uuid4().hex[:6]}", "read")
    own = settings.model_copy(
        update={"auth_disabled": False, "open_writes": True, "api_keys": [entry]}
    )
    with serving(create_app(own)) as url:
        yield url, key


@needs_browser
def test_the_page_takes_its_key_from_the_fragment_and_shows_customers_data(
    page: tuple[Page, list[str]], keyed_page_api: tuple[str, str], known_customer: str
) -> None:
    tab, errors = page
    url, key = keyed_page_api
    # Without a key: the page says what is missing, and no example customer is listed.
    tab.goto(url)
    tab.wait_for_selector("#examples li.muted")
    assert "read" in (tab.text_content("#examples") or "")
    assert tab.query_selector("#examples button") is None
    # With the address `recsys up` prints: examples and the profile show, and the key
    # leaves the address bar for the tab's sessionStorage.
    tab.goto(f"{url}/#key={key}")
    tab.wait_for_selector("#examples button")
    assert "#key" not in tab.url and key not in tab.url
    assert tab.evaluate("() => sessionStorage.getItem('recsys.apiKey')") == key
    tab.fill("#customer", known_customer)
    tab.click("#show")
    tab.wait_for_selector("#profile .facts")
    # A reload keeps the key for the tab.
    tab.reload()
    tab.wait_for_selector("#examples button")
    assert not [e for e in errors if "401" not in e and "403" not in e], errors
