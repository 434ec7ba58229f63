"""The simulator's settings: only loopback APIs, and bounds and shares that make sense."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from simulator.config import (
    NotLoopbackError,
    SimulationConfig,
    SimulationConfigError,
    SimulatorError,
    require_loopback,
)

INPUT = Path("unused")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "http://127.255.3.4:9",
        "http://localhost:8000",
        "http://LOCALHOST",
        "http://[::1]:8000",
        "https://127.0.0.1/prefix",
    ],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    config = SimulationConfig(input_dir=INPUT, api_url=url)
    assert config.api_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://0.0.0.0:8000",
        "http://128.0.0.1",
        "http://192.168.1.20",
        "http://example.com",
        "http://127.0.0.1.nip.io",
        "http://localhost.example.com",
        "http://[::2]:8000",
        "http://[::ffff:127.0.0.1]:8000",
        "http://[2001:db8::1]",
    ],
)
def test_other_hosts_are_refused_with_the_rule(url: str) -> None:
    with pytest.raises(NotLoopbackError, match=r"only targets loopback \(127\.0\.0\.0/8"):
        SimulationConfig(input_dir=INPUT, api_url=url)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:8000", "http:///x", ""])
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(NotLoopbackError):
        require_loopback(url)


def test_config_errors_are_simulator_errors_and_value_errors() -> None:
    with pytest.raises(SimulatorError):
        SimulationConfig(input_dir=INPUT, api_url="http://10.0.0.1")
    assert issubclass(SimulationConfigError, ValueError)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate_per_s", 0.0, "rate_per_s must be positive"),
        ("duration_s", -1.0, "duration_s must be positive"),
        ("duration_s", 10 * 24 * 3600.0, "duration_s must be at most"),
        ("max_events", 0, "max_events must be at least 1"),
        ("max_requests", 0, "max_requests must be at least 1"),
        ("views_per_session", (3, 1), "views_per_session"),
        ("views_per_session", (-1, 2), "views_per_session"),
        ("purchase_probability", 0.0, "purchase_probability"),
        ("bad_request_share", 1.5, "bad_request_share must be in"),
        ("drift_fraction", -0.1, "drift_fraction must be in"),
        ("drift_at", float("nan"), "drift_at must be in"),
        ("freshness_every", -1, "freshness_every must be at least 0"),
        ("freshness_timeout_s", 0.0, "freshness_timeout_s must be positive"),
        ("freshness_poll_s", 0.0, "freshness_poll_s must be in"),
        ("concurrency", 0, "concurrency must be at least 1"),
        ("request_timeout_s", 0.0, "request_timeout_s must be positive"),
        ("think_time_s", -0.1, "think_time_s must be >= 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(SimulationConfigError, match=message):
        SimulationConfig(input_dir=INPUT, **{field: value})  # type: ignore[arg-type]


def test_session_rate_gives_the_target_purchase_rate() -> None:
    config = SimulationConfig(input_dir=INPUT, rate_per_s=30, purchase_probability=0.25)
    assert config.session_rate_per_s == pytest.approx(120)
    assert SimulationConfig(input_dir=INPUT, duration_s=40, drift_at=0.5).drift_at_s == 20


def test_config_is_frozen() -> None:
    config = SimulationConfig(input_dir=INPUT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.api_url = "http://10.0.0.1"  # type: ignore[misc]
