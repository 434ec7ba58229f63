"""A lean asyncio Redis client for the serving hot path: one connection that every
request of the process shares.

Redis answers the commands of a connection in the order they came, so requests queue
their commands as they come and wait for their own replies in that order; hiredis packs
and parses. What the requests of one event-loop turn queued goes out in one write at the
end of it (auto-pipelining): under load one write system call serves several requests,
and Redis answers them with one read and one write of its own (+12% throughput of the
plain `/recommend` at saturation, two workers). Measured here, a GET costs ~36 µs of
CPU this way against ~77 µs through redis-py's asyncio client (connection pool checkout
and its parser) and ~180 µs through coredis or valkey-glide. Everything else in the
project uses redis-py.

A `rediss://` URL wraps the socket in TLS that verifies the server's certificate and
host name, with the CA and client certificate named in its query as redis-py names them
(`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`; recsys.settings puts them there).

A command that does not answer within the timeout fails with TimeoutError and drops the
connection (its replies could no longer be matched with certainty); a lost connection
fails every waiting command with ConnectionError. The next command reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.crc import key_slot as crc_slot
from redis.exceptions import AuthenticationError, ResponseError

from recsys.redaction import redacted_url

Command = Sequence[str | bytes | int | float]


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._unsent: list[bytes] = []  # packed commands of this loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its caller timed out; the reply still held its place
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"Redis connection lost: {exc}"))

    def send(self, commands: Sequence[Command]) -> list[asyncio.Future[Any]]:
        if self.transport is None or self.lost:
            raise ConnectionError("Redis connection is closed")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self.waiting.extend(futures)
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.extend(hiredis.pack_command(cast(Any, tuple(c))) for c in commands)
        return futures

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and not self.lost:
            self.transport.write(b"".join(unsent))


class MultiplexedRedis:
    """`redis://[user:password@]host:port/db` or `rediss://...`; timeout_s bounds
    connecting and each call."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"unsupported Redis URL scheme {parsed.scheme!r} in {redacted_url(url)!r}"
            )
        self._host = parsed.hostname or "localhost"
        self._port = parsed.port or 6379
        self._tls = _tls_context(parse_qs(parsed.query)) if parsed.scheme == "rediss" else None
        self._db = int(parsed.path.lstrip("/") or 0)
        self._username = unquote(parsed.username) if parsed.username else None
        self._password = unquote(parsed.password) if parsed.password else None
        self._timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> _Protocol:
        current = self._protocol
        if current is not None and not current.lost:
            return current
        async with self._connecting:
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(_Protocol, self._host, self._port, ssl=self._tls),
                    timeout=self._timeout_s,
                )
            except ssl.SSLError as exc:
                raise ConnectionError(
                    f"TLS to Redis at {self._host}:{self._port} failed: {exc} (is "
                    "redis_tls_ca_file the CA that signed the server's certificate, and "
                    "does the certificate name the URL's host?)"
                ) from exc
            try:
                await self._handshake(protocol)
            except BaseException:
                # A connection that failed its handshake is nobody's: close it now, or
                # every request that retries would leave one more socket open.
                self._drop(protocol)
                raise
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        hello: list[Command] = []
        if self._password is not None:
            auth = [self._username, self._password] if self._username else [self._password]
            hello.append(["AUTH", *auth])
        if self._db:
            hello.append(["SELECT", self._db])
        if not hello:
            return
        replies = asyncio.gather(*protocol.send(hello), return_exceptions=True)
        outcomes = await asyncio.wait_for(replies, self._timeout_s)
        for command, outcome in zip(hello, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            if command[0] == "AUTH" and isinstance(outcome, ResponseError):
                who = f"user {self._username!r}" if self._username else "the password"
                raise AuthenticationError(
                    f"Redis at {self._host}:{self._port} refused {who}: {outcome}"
                ) from outcome
            if isinstance(outcome, ResponseError) and str(outcome).startswith("NOAUTH"):
                raise AuthenticationError(
                    f"Redis at {self._host}:{self._port} asks for a password the URL lacks"
                ) from outcome
            raise outcome

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The commands' replies, sent in one write and answered in order; the first
        error reply raises (ResponseError)."""
        return [_raised(outcome) for outcome in await self.execute_each(commands)]

    async def execute_each(self, commands: Sequence[Command]) -> list[Any]:
        """The commands' replies in order, an error reply as its ResponseError in its
        place; a timeout or a lost connection raises."""
        protocol = await self._connected()
        futures = protocol.send(commands)
        # Replies come in order: when the last has come, all have.
        last = futures[-1]
        expiry = asyncio.get_running_loop().call_later(
            self._timeout_s, self._expire, protocol, last
        )
        try:
            await last
        except ResponseError:
            pass  # an error reply: it keeps its place among the replies
        except BaseException:
            for future in futures:  # every outcome retrieved: no "never retrieved" noise
                if future.done() and not future.cancelled():
                    future.exception()
                else:
                    future.cancel()
            raise
        finally:
            expiry.cancel()
        return [future.exception() or future.result() for future in futures]

    def _expire(self, protocol: _Protocol, last: asyncio.Future[Any]) -> None:
        if not last.done():
            last.set_exception(TimeoutError(f"Redis did not answer within {self._timeout_s} s"))
            self._drop(protocol)

    async def call(self, *command: str | bytes | int | float) -> Any:
        return (await self.execute([command]))[0]

    def _drop(self, protocol: _Protocol) -> None:
        if protocol.transport is not None:
            protocol.transport.abort()
        protocol.lost = True
        if self._protocol is protocol:
            self._protocol = None

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._drop(self._protocol)


def _raised(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    """The server verified against the CA (the system's when none is named), host name
    included, and this client's certificate sent where one is named."""

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    context = ssl.create_default_context(cafile=one("ssl_ca_certs"))
    if (certfile := one("ssl_certfile")) is not None:
        context.load_cert_chain(certfile, one("ssl_keyfile"))
    return context


# --- Redis or Valkey Cluster ----------------------------------------------------------

SLOTS = 16_384
# Commands whose first argument is no key (sent to any node).
_KEYLESS = frozenset({"PING", "TIME", "INFO", "SCRIPT", "CLUSTER", "ECHO", "DBSIZE"})
# A reply that moves a command elsewhere: the slot moved (MOVED) or is moving (ASK).
_REDIRECTS = 3


def command_key(command: Command) -> bytes | None:
    """The key a cluster routes the command by (None: any node will do)."""
    name = str(command[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        key = command[3] if int(command[2]) > 0 else None
    elif name in _KEYLESS or len(command) < 2:
        key = None
    else:
        key = command[1]
    if key is None:
        return None
    return key if isinstance(key, bytes) else str(key).encode()


def key_slot(key: bytes) -> int:
    return int(crc_slot(key))


Address = tuple[str, int]


class ClusterMultiplexedRedis:
    """The multiplexed connection over a Redis or Valkey Cluster: one connection per
    node, each command sent to the node that serves its key's slot.

    The slot map comes from CLUSTER SLOTS of any node the URL or the map names, and is
    asked again when a node answers MOVED (the reply's command then goes to the node it
    names). A node that does not answer fails only the calls that need it, within the
    timeout: a customer's keys share one slot (recsys.keys), so a request for a customer
    whose node is up is served whatever happens to the others."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"unsupported Redis URL scheme {parsed.scheme!r} in {redacted_url(url)!r}"
            )
        self._url = parsed
        self._timeout_s = timeout_s
        self._seed: Address = (parsed.hostname or "localhost", parsed.port or 6379)
        self._nodes: dict[Address, MultiplexedRedis] = {}
        self._slots: list[Address | None] = [None] * SLOTS
        self._any: Address = self._seed
        self._mapping = asyncio.Lock()

    def _node(self, address: Address) -> MultiplexedRedis:
        node = self._nodes.get(address)
        if node is None:
            host, port = address
            userinfo = self._url.netloc.rpartition("@")[0]
            netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
            node = MultiplexedRedis(self._url._replace(netloc=netloc).geturl(), self._timeout_s)
            self._nodes[address] = node
        return node

    async def _map_slots(self) -> None:
        """The slot map from the first node that answers (the URL's, then the known)."""
        async with self._mapping:
            failures: list[str] = []
            for address in dict.fromkeys([self._seed, *self._nodes]):
                try:
                    ranges = await self._node(address).call("CLUSTER", "SLOTS")
                except (ConnectionError, TimeoutError, OSError, ResponseError) as exc:
                    failures.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                slots: list[Address | None] = [None] * SLOTS
                for low, high, primary, *_replicas in ranges:
                    host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                    owner = (host or address[0], int(primary[1]))
                    slots[int(low) : int(high) + 1] = [owner] * (int(high) - int(low) + 1)
                self._slots = slots
                # A keyless command goes to any node: the first the map names.
                self._any = next((a for a in slots if a is not None), self._seed)
                return
            raise ConnectionError(f"no Redis Cluster node answered: {'; '.join(failures)}")

    def _owner(self, command: Command) -> Address:
        key = command_key(command)
        if key is None:
            return self._any
        owner = self._slots[key_slot(key)]
        if owner is None:
            raise ConnectionError(f"no Redis Cluster node serves the slot of {key!r}")
        return owner

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        return [_raised(outcome) for outcome in await self.execute_each(commands)]

    async def execute_each(self, commands: Sequence[Command]) -> list[Any]:
        """As MultiplexedRedis.execute_each; the commands may span nodes (each node's
        share goes in one write, the nodes in parallel)."""
        if all(a is None for a in self._slots):
            await self._map_slots()
        outcomes: list[Any] = [None] * len(commands)
        pending = {i: self._owner(c) for i, c in enumerate(commands)}
        asking: set[int] = set()
        for _ in range(_REDIRECTS + 1):
            by_node: dict[Address, list[int]] = collections.defaultdict(list)
            for position, address in pending.items():
                by_node[address].append(position)
            sent = [
                self._send(address, [commands[i] for i in positions], asking & set(positions))
                for address, positions in by_node.items()
            ]
            results = await asyncio.gather(*sent, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            pending, asking = {}, set()
            remap = False
            for positions, replies in zip(by_node.values(), results, strict=True):
                for position, reply in zip(positions, cast(list[Any], replies), strict=True):
                    moved = _redirect(reply)
                    if moved is None:
                        outcomes[position] = reply
                        continue
                    kind, address = moved
                    pending[position] = address
                    if kind == "ASK":
                        asking.add(position)
                    else:
                        remap = True
            if not pending:
                return outcomes
            if remap:
                await self._map_slots()
        raise ConnectionError(f"Redis Cluster kept redirecting {len(pending)} commands")

    async def _send(self, address: Address, commands: list[Command], asking: set[int]) -> list[Any]:
        node = self._node(address)
        if not asking:
            return await node.execute_each(commands)
        # ASK: the slot is moving; the target serves the command once told ASKING first.
        with_asking: list[Command] = []
        for command in commands:
            with_asking += [("ASKING",), command]
        return (await node.execute_each(with_asking))[1::2]

    async def call(self, *command: str | bytes | int | float) -> Any:
        return (await self.execute([command]))[0]

    async def aclose(self) -> None:
        for node in self._nodes.values():
            await node.aclose()


def _redirect(reply: Any) -> tuple[str, Address] | None:
    """("MOVED" | "ASK", the node to ask) for a redirecting error reply, else None."""
    if not isinstance(reply, ResponseError):
        return None
    parts = str(reply).split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    return parts[0], (host, int(port))
