"""A printed engine address never shows a password."""

from __future__ import annotations

import pytest

from recsys.redaction import redacted_url


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://alice:p%40ss@redis:6380/2", "rediss://alice:***@redis:6380/2"),
        ("redis://redis:6379/0?password=s3cret&db=1", "redis://redis:6379/0?password=***&db=1"),
        ("http://qdrant:6333?api_key=s3cret", "http://qdrant:6333?api_key=***"),
        # Nothing to hide: as they are.
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("127.0.0.1:9092", "127.0.0.1:9092"),
        ("kafka-1:9092,kafka-2:9092", "kafka-1:9092,kafka-2:9092"),
        ("redis://alice@redis:6379/0", "redis://alice@redis:6379/0"),
        (None, "None"),
    ],
)
def test_redacted_url(url: str | None, printed: str) -> None:
    assert redacted_url(url) == printed


def test_an_unparsable_url_is_not_echoed() -> None:
    assert "s3cret" not in redacted_url("redis://:s3cret@[::1:6379/0")
