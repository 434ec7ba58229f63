"""The serving hot path's Redis client against the suite's Valkey: concurrent callers get
their own replies, errors and timeouts stay with their call, and it reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError

from recsys.multiplexed_redis import MultiplexedRedis, _Protocol
from recsys.settings import Settings
from support import TcpProxy

DB = 8  # a database of its own


@pytest.fixture
def url(settings: Settings, redis_conn: redis.Redis) -> Iterator[str]:
    assert settings.redis_url
    own = settings.redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis.Redis.from_url(own)
    client.flushdb()
    client.mset({f"k{i}": f"v{i}" for i in range(200)})
    client.zadd("z", {"a": 1, "b": 2})
    try:
        yield own
    finally:
        client.flushdb()
        client.close()


def test_concurrent_callers_get_their_own_replies_in_the_selected_db(url: str) -> None:
    async def run() -> None:
        client = MultiplexedRedis(url, timeout_s=2)
        try:
            replies = await asyncio.gather(*(client.call("GET", f"k{i}") for i in range(200)))
            assert replies == [f"v{i}".encode() for i in range(200)]
            got = await client.execute([("ZREVRANGE", "z", 0, -1), ("GET", "missing")])
            assert got == [[b"b", b"a"], None]
        finally:
            await client.aclose()

    asyncio.run(run())


class _CountingTransport:
    def __init__(self, real: asyncio.Transport, writes: list[bytes]) -> None:
        self._real = real
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(data)
        self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_the_commands_of_one_loop_turn_go_out_in_one_write(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    made = _Protocol.connection_made

    def counted(self: _Protocol, transport: asyncio.BaseTransport) -> None:
        made(self, transport)
        self.transport = _CountingTransport(self.transport, writes)  # type: ignore[arg-type,assignment]

    monkeypatch.setattr(_Protocol, "connection_made", counted)

    async def run() -> None:
        client = MultiplexedRedis(url, timeout_s=2)
        try:
            assert await client.call("PING") == b"PONG"
            writes.clear()
            replies = await asyncio.gather(*(client.call("GET", f"k{i}") for i in range(50)))
            assert replies == [f"v{i}".encode() for i in range(50)]
            assert len(writes) == 1 and writes[0].count(b"GET") == 50
            # The next turn's commands go out in a write of their own.
            assert await client.call("GET", "k7") == b"v7"
            assert len(writes) == 2
        finally:
            await client.aclose()

    asyncio.run(run())


def test_an_error_reply_fails_only_its_call(url: str) -> None:
    async def run() -> None:
        client = MultiplexedRedis(url, timeout_s=2)
        try:
            bad = client.call("INCR", "k1")  # not an integer
            good = client.call("GET", "k2")
            results = await asyncio.gather(bad, good, return_exceptions=True)
            assert isinstance(results[0], ResponseError)
            assert results[1] == b"v2"
            assert await client.call("GET", "k3") == b"v3"
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_hanging_server_times_out_and_the_client_reconnects_after(url: str) -> None:
    target = urlparse(url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 6379))

    async def run() -> None:
        client = MultiplexedRedis(proxy.url_for(url), timeout_s=0.3)
        try:
            assert await client.call("GET", "k1") == b"v1"
            proxy.set_mode("blackhole")  # cuts the open connection, then hangs new ones
            with pytest.raises(ConnectionError):
                await client.call("GET", "k1")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await client.call("GET", "k1")
            assert loop.time() - started < 1.0
            proxy.set_mode("refuse")
            with pytest.raises((ConnectionError, OSError, TimeoutError)):
                await client.call("GET", "k1")
            proxy.set_mode("forward")
            assert await client.call("GET", "k4") == b"v4"
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        proxy.close()


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="scheme"):
        MultiplexedRedis("unix:///tmp/redis.sock", timeout_s=1)


def test_a_refused_url_is_named_without_its_password() -> None:
    with pytest.raises(ValueError, match="scheme") as refused:
        MultiplexedRedis("unix://:hunter2-secret@/tmp/redis.sock", timeout_s=1)
    assert "hunter2-secret" not in str(refused.value)


def _open_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd).startswith("socket:")
    return count


def test_a_wrong_password_fails_clearly_and_leaks_no_socket(url: str) -> None:
    """The suite's Valkey asks for its per-run password; a wrong one must fail each call
    with a clear error and close the socket it opened for the handshake."""
    parts = urlsplit(url)
    assert parts.password, "the embedded Valkey asks for a password"
    wrong_password = "not-the-password-" + "x" * 16
    wrong = url.replace(f":{parts.password}@", f":{wrong_password}@")

    async def run() -> None:
        client = MultiplexedRedis(wrong, timeout_s=2)
        try:
            with pytest.raises(AuthenticationError) as refused:
                await client.call("GET", "k1")
            message = str(refused.value)
            assert "refused the password" in message and wrong_password not in message
            before = _open_sockets()
            for _ in range(30):
                with pytest.raises(AuthenticationError):
                    await client.call("GET", "k1")
            assert _open_sockets() - before < 3  # 30 before the fix
        finally:
            await client.aclose()
        right = MultiplexedRedis(url, timeout_s=2)
        try:
            assert await right.call("GET", "k1") == b"v1"
        finally:
            await right.aclose()

    asyncio.run(run())


def test_no_password_for_a_server_that_asks_for_one_says_so(url: str) -> None:
    parts = urlsplit(url)
    assert parts.password
    bare = url.replace(f":{parts.password}@", "@")  # the database is selected in the handshake

    async def run() -> None:
        client = MultiplexedRedis(bare, timeout_s=2)
        try:
            with pytest.raises(AuthenticationError, match="asks for a password"):
                await client.call("GET", "k1")
        finally:
            await client.aclose()

    asyncio.run(run())
