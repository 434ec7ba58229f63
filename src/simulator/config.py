"""What one simulation run does, checked before any request: bounds, shares, and the rule
that the simulator only ever loads an API on this machine (loopback)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

LOOPBACK_NAMES: Final = frozenset({"localhost"})
# Long enough for a soak test, short enough that a typo (3600 for 36) cannot run for days.
MAX_DURATION_S: Final = 24 * 3600.0


class SimulatorError(Exception):
    """Anything the simulator refuses or cannot do, said in one line (the CLI prints it)."""


class SimulationConfigError(SimulatorError, ValueError):
    """A setting the simulator refuses, with the reason."""


class NotLoopbackError(SimulationConfigError):
    """The API URL names a host outside 127.0.0.0/8, localhost and ::1."""


def require_loopback(api_url: str) -> str:
    """The URL without a trailing slash, or NotLoopbackError: load is only ever sent to
    this machine, so a mistyped URL cannot load someone else's API."""
    try:
        url = httpx.URL(api_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise NotLoopbackError(f"not a URL: {api_url!r} ({exc})") from exc
    if url.scheme not in {"http", "https"} or not url.host:
        raise NotLoopbackError(f"the API URL must be http(s)://host[:port], got {api_url!r}")
    if not is_loopback_host(url.host):
        raise NotLoopbackError(
            f"refusing to send load to {url.host!r}: the simulator only targets loopback "
            "(127.0.0.0/8, localhost or ::1)"
        )
    return api_url.rstrip("/")


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # any other name could resolve anywhere
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


@dataclass(frozen=True)
class SimulationConfig:
    """One run. Rates are per second of wall time; shares are probabilities in [0, 1]."""

    input_dir: Path  # the H&M-schema CSVs the live model was trained on
    api_url: str = "http://127.0.0.1:8000"
    rate_per_s: float = 20.0  # target purchases (POST /events/purchase) per second
    duration_s: float = 60.0  # no session starts or goes on after this
    max_events: int = 100_000  # purchases posted, at most
    max_requests: int = 1_000_000  # HTTP requests of every kind (probes too), at most
    views_per_session: tuple[int, int] = (1, 4)  # views of a session, uniform in [lo, hi]
    purchase_probability: float = 0.5  # a session ends with one purchase
    think_time_s: float = 0.2  # mean pause between a session's requests (exponential)
    popular_share: float = 0.1  # views of GET /popular instead of /recommend
    filter_share: float = 0.2  # views filtered to a product group of the customer's taste
    # Each shown item of the wanted group tempts with this probability; tempted, the
    # customer buys the best of them (and names the list it came from).
    follow_recommendations: float = 0.3
    # Weaker signals: a recommendation view posts one shown item as a view event with this
    # probability (POST /events/view), and a purchase is preceded by an add-to-cart of the
    # same article with this one (POST /events/add_to_cart).
    view_event_share: float = 0.1
    add_to_cart_share: float = 0.3
    new_customer_share: float = 0.02  # sessions of customers with no purchase history
    bad_request_share: float = 0.02  # session steps that also send a request meant to fail
    drift_fraction: float = 0.2  # known customers whose taste switches
    drift_at: float = 0.5  # when, as a fraction of duration_s (0: from the start)
    freshness_every: int = 10  # probe every Nth accepted purchase (0: no probes)
    freshness_timeout_s: float = 5.0  # a probe gives up after this long
    freshness_poll_s: float = 0.003  # pause between a probe's polls
    # How long an event the API refused with 503 (the broker did not acknowledge it) or
    # did not answer is sent again, with the same event_id; 0: never (the soak's chaos
    # sets it: a client that retries loses nothing).
    retry_unavailable_s: float = 0.0
    concurrency: int = 32  # requests in flight at once (probes apart)
    request_timeout_s: float = 5.0  # per request: connect, read, write, pool
    seed: int = 7
    # An A/B experiment the API runs (RECSYS_EXPERIMENTS_FILE) to report on for this run.
    experiment: str | None = None
    # An API key of the events (or admin) role, sent with every request; None for an API
    # whose writes are open (`recsys demo`, `recsys up`). Never in a repr or the report.
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", require_loopback(self.api_url))
        _positive("rate_per_s", self.rate_per_s)
        _positive("duration_s", self.duration_s)
        if self.duration_s > MAX_DURATION_S:
            raise SimulationConfigError(
                f"duration_s must be at most {MAX_DURATION_S:.0f}, got {self.duration_s}"
            )
        _at_least("max_events", self.max_events, 1)
        _at_least("max_requests", self.max_requests, 1)
        lo, hi = self.views_per_session
        # 0..0: sessions that only buy (the freshness benchmark's pure event stream).
        if not 0 <= lo <= hi <= 100:
            raise SimulationConfigError(
                f"views_per_session must be lo..hi with 0 <= lo <= hi <= 100, got {lo}..{hi}"
            )
        if not 0.0 < self.purchase_probability <= 1.0:
            raise SimulationConfigError(
                f"purchase_probability must be in (0, 1], got {self.purchase_probability}"
            )
        for name in (
            "popular_share",
            "filter_share",
            "follow_recommendations",
            "view_event_share",
            "add_to_cart_share",
            "new_customer_share",
            "bad_request_share",
            "drift_fraction",
            "drift_at",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise SimulationConfigError(f"{name} must be in [0, 1], got {value}")
        if self.think_time_s < 0 or not math.isfinite(self.think_time_s):
            raise SimulationConfigError(f"think_time_s must be >= 0, got {self.think_time_s}")
        _at_least("freshness_every", self.freshness_every, 0)
        _positive("freshness_timeout_s", self.freshness_timeout_s)
        if not 0.001 <= self.freshness_poll_s <= 1.0:
            raise SimulationConfigError(
                f"freshness_poll_s must be in [0.001, 1], got {self.freshness_poll_s}"
            )
        if not (math.isfinite(self.retry_unavailable_s) and self.retry_unavailable_s >= 0):
            raise SimulationConfigError(
                f"retry_unavailable_s must be >= 0, got {self.retry_unavailable_s}"
            )
        _at_least("concurrency", self.concurrency, 1)
        _positive("request_timeout_s", self.request_timeout_s)

    @property
    def session_rate_per_s(self) -> float:
        """Session arrivals per second that give rate_per_s purchases on average."""
        return self.rate_per_s / self.purchase_probability

    @property
    def drift_at_s(self) -> float:
        return self.drift_at * self.duration_s


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise SimulationConfigError(f"{name} must be positive, got {value}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise SimulationConfigError(f"{name} must be at least {low}, got {value}")
