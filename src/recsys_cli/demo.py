"""`recsys demo`: the whole loop on embedded engines, narrated.

Generate data, train, serve, show a customer's top 10, buy from another taste, and
show the top 10 again once the updater has applied those purchases.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from batch.generate import generate
from recsys.bus import ensure_topics
from recsys.engines.embedded import EmbeddedEngines, Endpoints
from recsys.engines.process import free_port
from recsys.hm_schema import ARTICLES_FILE, TRANSACTIONS_FILE
from recsys.model_store import read_trending
from recsys.redaction import redacted_url
from recsys.settings import Settings
from recsys.supervisor import LocalAccess, Stack, drain_broker, local_access
from recsys.trending_lists import TrendingLists
from recsys_cli.console import print_access

DEMO_CUSTOMERS, DEMO_ARTICLES, DEMO_TRANSACTIONS = 3_000, 1_500, 80_000
PURCHASES = 5


def pick_customer(input_dir: Path) -> tuple[str, str]:
    """A customer with a clear taste: many purchases, most of them in one product group."""
    tx = pd.read_csv(input_dir / TRANSACTIONS_FILE, dtype={"article_id": str})
    arts = pd.read_csv(input_dir / ARTICLES_FILE, dtype={"article_id": str})
    tx = tx.merge(arts[["article_id", "product_group_name"]], on="article_id")
    counts = tx.groupby("customer_id").size()
    regulars = counts[counts >= 15].index
    shares = (
        tx[tx["customer_id"].isin(regulars)]
        .groupby("customer_id")["product_group_name"]
        .agg(lambda s: s.value_counts(normalize=True).iloc[0])
    )
    customer = str(shares.idxmax())
    group = str(tx.loc[tx["customer_id"] == customer, "product_group_name"].mode().iloc[0])
    return customer, group


def other_taste(
    trending: TrendingLists, before: list[dict[str, Any]], own_group: str
) -> tuple[str, list[str]]:
    """The trending product group least present in the customer's list, and its top items."""
    shown = Counter(i["metadata"]["product_group_name"] for i in before)
    by_group = {
        group: [e["article_id"] for e in entries]
        for group, entries in trending.by_segment["product_group_name"].items()
    }
    candidates = [g for g, items in by_group.items() if g != own_group and len(items) >= PURCHASES]
    group = min(candidates, key=lambda g: (shown[g], -len(by_group[g])))
    return group, by_group[group][:PURCHASES]


def _table(title: str, items: list[dict[str, Any]], marked: set[str] | None = None) -> Table:
    table = Table(title=title)
    for col in ("#", "article_id", "product group", "product type", "colour", "score"):
        table.add_column(col, justify="right" if col in {"#", "score"} else "left")
    for rank, item in enumerate(items, 1):
        meta = item["metadata"]
        style = "bold green" if marked and item["article_id"] in marked else None
        table.add_row(
            str(rank),
            item["article_id"],
            meta.get("product_group_name", ""),
            meta.get("product_type_name", ""),
            meta.get("colour_group_name", ""),
            f"{item['score']:.3f}",
            style=style,
        )
    return table


def _wait_applied(http: httpx.Client, customer: str, event_id: str, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        body = http.get(f"/recommend/{customer}").json()
        if body.get("applied_event_id") == event_id:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise TimeoutError(f"purchase {event_id} was not applied within {timeout_s:.0f} s")


def run_demo(
    settings: Settings,
    console: Console,
    *,
    once: bool,
    port: int | None,
    run_batch: Callable[[Settings, Path], None],
) -> int:
    started = time.perf_counter()
    input_dir = settings.data_dir / "demo-input"
    console.rule("1. generate H&M-schema data")
    data = generate(
        input_dir,
        customers=DEMO_CUSTOMERS,
        articles=DEMO_ARTICLES,
        transactions=DEMO_TRANSACTIONS,
        seed=7,
    )
    console.print(
        f"{data.transactions:,} transactions by {data.customers:,} customers "
        f"on {data.articles:,} articles in {input_dir}"
    )

    def drain(bootstrap: str) -> None:
        drain_broker(settings, bootstrap)

    with EmbeddedEngines(settings, {"redis", "kafka"}, before_broker_stop=drain) as endpoints:
        console.rule("2. batch: Delta tables, ALS, index, Redis")
        run_batch(settings, input_dir)
        ensure_topics(endpoints.require_kafka(), settings)

        console.rule("3. serve: API and updater")
        access, walk_through_key = demo_access(settings)
        api_port = port if port is not None else free_port()
        stack = Stack(settings, endpoints, api_port, access=access)
        try:
            stack.start()
            console.print(f"API at {stack.api_url} (docs: {stack.api_url}/docs)")
            print_access(console, stack.api_url, access)
            auth = {"Authorization": f"Bearer {walk_through_key}"}
            with httpx.Client(base_url=stack.api_url, timeout=10, headers=auth) as http:
                code = _walk_through(settings, console, http)
            console.print(f"demo walk-through finished in {time.perf_counter() - started:.1f} s")
            if not once and code == 0:
                console.print(serving_banner(stack.api_url, endpoints))
                print_access(console, stack.api_url, access)
                stack.wait()
            return code
        except KeyboardInterrupt:
            console.print("stopping…")
            return 0
        finally:
            stack.stop()


def demo_access(settings: Settings) -> tuple[LocalAccess, str]:
    """The same guard as `recsys up` (on 0.0.0.0 nothing is opened and no page key is
    minted), and an events key of the walk-through's own, never printed: it posts its
    purchases however the API is bound."""
    access = local_access(settings)
    return access, access.mint("demo", "events")


def serving_banner(api_url: str, endpoints: Endpoints) -> str:
    """The line the demo ends on; the engines' passwords hidden."""
    return (
        f"serving at {api_url} until Ctrl-C "
        f"(Redis {redacted_url(endpoints.redis_url)}, "
        f"Kafka {redacted_url(endpoints.kafka_bootstrap)})"
    )


def _walk_through(settings: Settings, console: Console, http: httpx.Client) -> int:
    customer, own_group = pick_customer(settings.data_dir / "demo-input")
    before = http.get(f"/recommend/{customer}").json()
    console.rule("4. recommendations before")
    console.print(f"customer {customer[:16]}… mostly buys [bold]{own_group}[/bold]")
    console.print(
        _table(f"top 10 ({before['source']}, model {before['model_version']})", before["items"])
    )

    trending = read_trending(settings.models_dir, before["model_version"])
    group, articles = other_taste(trending, before["items"], own_group)
    console.rule(f"5. the customer buys {len(articles)} items of {group}")
    last_event = ""
    for article_id in articles:
        response = http.post(
            "/events/purchase", json={"customer_id": customer, "article_id": article_id}
        )
        response.raise_for_status()
        last_event = response.json()["event_id"]
        console.print(
            f"POST /events/purchase {article_id} -> {response.status_code} event {last_event}"
        )
    waited = _wait_applied(http, customer, last_event, timeout_s=30)
    console.print(f"the updater applied the last purchase {waited * 1000:.0f} ms after its 202")

    after = http.get(f"/recommend/{customer}").json()
    console.rule("6. recommendations after")
    before_ids = {i["article_id"] for i in before["items"]}
    new_ids = {i["article_id"] for i in after["items"]} - before_ids
    console.print(
        _table("top 10 after the purchases (new entries in green)", after["items"], new_ids)
    )
    share_before = sum(i["metadata"]["product_group_name"] == group for i in before["items"])
    share_after = sum(i["metadata"]["product_group_name"] == group for i in after["items"])
    console.print(
        f"{len(new_ids)} of {len(after['items'])} items changed; "
        f"items of {group}: {share_before} -> {share_after}"
    )
    if not new_ids:
        console.print("[red]the recommendations did not change[/red]")
        return 1
    return 0
