"""What `recsys up` and `recsys demo` print about the engines hides their passwords."""

from __future__ import annotations

from recsys.engines.embedded import Endpoints
from recsys_cli.console import console
from recsys_cli.demo import serving_banner
from recsys_cli.stack_commands import _print_urls

URL = "redis://:per-run-s3cret@127.0.0.1:6379/0"


def test_the_up_banner_hides_the_redis_password() -> None:
    with console.capture() as printed:
        _print_urls("http://127.0.0.1:8000", URL, "127.0.0.1:9092")
    text = printed.get()
    assert "per-run-s3cret" not in text
    assert "redis://:***@127.0.0.1:6379/0" in text and "127.0.0.1:9092" in text


def test_the_demo_banner_hides_the_redis_password() -> None:
    line = serving_banner("http://127.0.0.1:8000", Endpoints(URL, "127.0.0.1:9092"))
    assert "per-run-s3cret" not in line
    assert "redis://:***@127.0.0.1:6379/0" in line
