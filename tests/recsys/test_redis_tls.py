"""Redis over TLS with a CA and a client certificate, and ACL users, through both client
paths (redis-py and the multiplexed hot-path connection), against a real TLS server.

The embedded valkey-server is built without TLS, so these run against Debian's
`redis-server` (installed by .ci/run), with a throwaway CA made by the `openssl` command
line. The server requires client certificates (`tls-auth-clients yes`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import AuthenticationError

from recsys.engines.process import free_port
from recsys.multiplexed_redis import MultiplexedRedis
from recsys.settings import Settings
from recsys.stores import redis_client

REDIS_SERVER = shutil.which("redis-server")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or OPENSSL is None,
    reason="needs Debian's redis-server (built with TLS; apt-get install redis-server, as "
    ".ci/run does) and the openssl command line",
)


def _openssl(*args: str | Path) -> None:
    subprocess.run([str(OPENSSL), *map(str, args)], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
    )  # fmt: skip
    return cert, key


def _signed(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", ext,
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path

    def url(self, host: str = "localhost", user_info: str = "") -> str:
        return f"rediss://{user_info}{host}:{self.port}/0"

    def settings(self, url: str, *, ca: Path | None = None, cert: bool = True) -> Settings:
        return Settings(  # type: ignore[call-arg]
            _env_file=None,
            redis_url=url,
            redis_tls_ca_file=ca or self.ca,
            redis_tls_cert_file=self.client_cert if cert else None,
            redis_tls_key_file=self.client_key if cert else None,
        )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    directory = tmp_path_factory.mktemp("redis-tls")
    ca = _ca(directory, "test-ca")
    wrong_ca, _ = _ca(directory, "other-ca")
    # The server's certificate names localhost only: 127.0.0.1 must fail the host check.
    server = _signed(
        directory, "server", ca, "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    client = _signed(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(REDIS_SERVER), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(server[0]), "--tls-key-file", str(server[1]),
            "--tls-ca-cert-file", str(ca[0]), "--tls-auth-clients", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ready = TlsRedis(port, ca[0], client[0], client[1], wrong_ca)
        admin = redis_client(ready.settings(ready.url()).redis_url or "", 5.0)
        deadline = time.monotonic() + 15
        while True:
            try:
                admin.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"redis-server with TLS did not start:\n{output}")
                time.sleep(0.1)
        admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all")
        admin.close()
        yield ready
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _multiplexed(url: str, *command: str) -> Any:
    async def run() -> Any:
        client = MultiplexedRedis(url, timeout_s=5)
        try:
            return await client.call(*command)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_settings_carry_the_tls_files_to_both_clients(tls_redis: TlsRedis) -> None:
    url = tls_redis.settings(tls_redis.url()).redis_url
    assert url is not None and "ssl_ca_certs=" in url and "ssl_certfile=" in url
    client = redis_client(url, 5.0)
    try:
        client.set("tls:probe", "through redis-py")
        assert client.get("tls:probe") == b"through redis-py"
    finally:
        client.close()
    assert _multiplexed(url, "GET", "tls:probe") == b"through redis-py"
    assert _multiplexed(url, "PING") == b"PONG"


def test_a_wrong_ca_is_refused(tls_redis: TlsRedis) -> None:
    url = tls_redis.settings(tls_redis.url(), ca=tls_redis.wrong_ca).redis_url or ""
    client = redis_client(url, 5.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        client.ping()
    client.close()
    with pytest.raises(ConnectionError, match=r"certificate verify failed.*redis_tls_ca_file"):
        _multiplexed(url, "PING")


def test_the_host_name_is_verified(tls_redis: TlsRedis) -> None:
    # The right CA, but the certificate names localhost, not 127.0.0.1.
    url = tls_redis.settings(tls_redis.url(host="127.0.0.1")).redis_url or ""
    client = redis_client(url, 5.0)
    with pytest.raises(redis.exceptions.ConnectionError, match=r"127\.0\.0\.1"):
        client.ping()
    client.close()
    with pytest.raises(ConnectionError, match=r"not valid for '127\.0\.0\.1'"):
        _multiplexed(url, "PING")


def test_a_client_without_a_certificate_is_refused(tls_redis: TlsRedis) -> None:
    url = tls_redis.settings(tls_redis.url(), cert=False).redis_url or ""
    client = redis_client(url, 5.0)
    with pytest.raises(redis.exceptions.ConnectionError):  # redis-py: "EOF ... protocol"
        client.ping()
    client.close()
    # TLS 1.3 finishes the client's side of the handshake before the server checks for a
    # certificate: its refusal reaches the client as the alert or, when the server's
    # close wins the race, as a reset connection.
    with pytest.raises(ConnectionError, match=r"certificate required|reset by peer"):
        _multiplexed(url, "PING")


def test_an_acl_user_authenticates_and_a_wrong_password_is_refused(tls_redis: TlsRedis) -> None:
    url = tls_redis.settings(tls_redis.url(user_info="app:pw@")).redis_url or ""
    client = redis_client(url, 5.0)
    try:
        assert client.acl_whoami() == "app"
    finally:
        client.close()
    assert _multiplexed(url, "ACL", "WHOAMI") == b"app"

    wrong = tls_redis.settings(tls_redis.url(user_info="app:nope@")).redis_url or ""
    client = redis_client(wrong, 5.0)
    with pytest.raises(AuthenticationError):
        client.ping()
    client.close()
    with pytest.raises(AuthenticationError, match="refused user 'app'"):
        _multiplexed(wrong, "PING")


def test_tls_files_need_a_rediss_url_and_go_in_pairs(tls_redis: TlsRedis) -> None:
    with pytest.raises(ValueError, match="need a rediss:// redis_url"):
        Settings(
            _env_file=None, redis_url="redis://localhost:6379/0", redis_tls_ca_file=tls_redis.ca
        )  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="redis_tls_cert_file and redis_tls_key_file go together"):
        Settings(
            _env_file=None, redis_url=tls_redis.url(), redis_tls_cert_file=tls_redis.client_cert
        )  # type: ignore[call-arg]
