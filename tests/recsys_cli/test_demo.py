"""`recsys demo`'s access: the same loopback guard as `recsys up`, a key of its own for
the walk-through, and only the page's key printed."""

from __future__ import annotations

from rich.console import Console

from recsys.api_keys import digest
from recsys.engines.embedded import Endpoints
from recsys.settings import Settings
from recsys.supervisor import LocalAccess, Stack
from recsys_cli.console import print_access
from recsys_cli.demo import demo_access


def _settings(api_host: str) -> Settings:
    return Settings(_env_file=None, api_host=api_host, api_keys=[])  # type: ignore[call-arg]


def _env(settings: Settings, access: LocalAccess) -> dict[str, str]:
    """The children's environment, without starting them."""
    endpoints = Endpoints(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:2")
    return Stack(settings, endpoints, 8000, access=access).child_env()


def test_the_demo_on_every_interface_opens_nothing() -> None:
    settings = _settings("0.0.0.0")
    access, walk_through_key = demo_access(settings)
    assert not access.open_writes and access.page_key is None
    # Only the walk-through's own events key is configured: it posts, nobody else may.
    (entry,) = access.keys
    assert entry.role == "events" and entry.sha256 == digest(walk_through_key)
    env = _env(settings, access)
    assert "RECSYS_OPEN_WRITES" not in env
    assert env.get("RECSYS_AUTH_DISABLED") != "true"


def test_the_demo_on_loopback_mints_a_page_key_and_prints_only_it() -> None:
    settings = _settings("127.0.0.1")
    access, walk_through_key = demo_access(settings)
    assert access.open_writes and access.page_key is not None
    assert sorted(entry.role for entry in access.keys) == ["events", "read"]
    assert _env(settings, access)["RECSYS_OPEN_WRITES"] == "true"
    out = Console(record=True, width=60)
    print_access(out, "http://127.0.0.1:8000", access)
    printed = out.export_text()
    assert f"http://127.0.0.1:8000/#key={access.page_key}\n" in printed
    assert walk_through_key not in printed


def test_printed_on_every_interface_there_is_no_key() -> None:
    access, _ = demo_access(_settings("0.0.0.0"))
    out = Console(record=True, width=200)
    print_access(out, "http://0.0.0.0:8000", access)
    printed = out.export_text()
    assert "rsk_" not in printed and "no page key" in printed
