"""The Kafka clients' security settings: each protocol gives every client the right
librdkafka keys through recsys.bus.client_config, inconsistent settings are refused, and
a real confluent-kafka client accepts the config.

The embedded broker has no usable SASL or TLS, so no broker is reached here: the
broker's side is the deployment's Kafka (docs/security.md).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from recsys.bus import client_config, consumer_config, producer_config
from recsys.settings import Settings

SECURITY_KEYS = {
    "security.protocol",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
}


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _files(tmp_path: Path) -> dict[str, Path]:
    names = {"kafka_ssl_ca_file": "ca.pem", "kafka_ssl_cert_file": "client.pem",
             "kafka_ssl_key_file": "client.key"}  # fmt: skip
    return {setting: tmp_path / name for setting, name in names.items()}


def _security(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key in SECURITY_KEYS}


def test_plaintext_by_default_adds_no_security_key() -> None:
    assert client_config("b:9092", _settings()) == {"bootstrap.servers": "b:9092"}
    assert client_config("b:9092", None) == {"bootstrap.servers": "b:9092"}


def test_ssl_sends_the_ca_and_the_client_certificate(tmp_path: Path) -> None:
    files = _files(tmp_path)
    settings = _settings(kafka_security_protocol="SSL", **files)
    assert _security(client_config("b:9093", settings)) == {
        "security.protocol": "ssl",
        "ssl.ca.location": str(files["kafka_ssl_ca_file"]),
        "ssl.certificate.location": str(files["kafka_ssl_cert_file"]),
        "ssl.key.location": str(files["kafka_ssl_key_file"]),
    }


def test_sasl_plaintext_sends_the_credentials() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="app",
        kafka_sasl_password="s3cret",
    )
    assert _security(client_config("b:9092", settings)) == {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "app",
        "sasl.password": "s3cret",
    }
    assert "s3cret" not in repr(settings)  # a SecretStr, never printed


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_sends_credentials_and_the_ca(tmp_path: Path, mechanism: str) -> None:
    ca = _files(tmp_path)["kafka_ssl_ca_file"]
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="app",
        kafka_sasl_password="s3cret",
        kafka_ssl_ca_file=ca,
    )
    expected = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": mechanism,
        "sasl.username": "app",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }
    # Every client the project makes starts from the same keys.
    for config in (
        client_config("b:9093", settings),
        producer_config("b:9093", settings),
        consumer_config("b:9093", "group", settings),
    ):
        assert _security(config) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"},
         "needs kafka_sasl_username and kafka_sasl_password"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "app"},
         "needs kafka_sasl_username and kafka_sasl_password"),
        ({"kafka_sasl_username": "app", "kafka_sasl_password": "pw"}, "sends no SASL"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "c.pem"},
         "kafka_ssl_cert_file and kafka_ssl_key_file go together"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_key_file": "c.key"},
         "kafka_ssl_cert_file and kafka_ssl_key_file go together"),
        ({"kafka_ssl_ca_file": "ca.pem"}, "uses no TLS"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI",
          "kafka_sasl_username": "app", "kafka_sasl_password": "pw"}, "kafka_sasl_mechanism"),
    ],
)  # fmt: skip
def test_inconsistent_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(**values)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")
def test_real_clients_accept_the_config(tmp_path: Path) -> None:
    # librdkafka checks its keys and loads the CA when a client is made; no broker is
    # contacted before the first request.
    ca = tmp_path / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(ca), "-days", "1",
         "-subj", "/CN=throwaway-ca"],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="app",
        kafka_sasl_password="s3cret",
        kafka_ssl_ca_file=ca,
    )
    producer = Producer(producer_config("127.0.0.1:1", settings))
    producer.flush(0)
    consumer = Consumer(consumer_config("127.0.0.1:1", "group", settings))
    consumer.close()
    AdminClient(client_config("127.0.0.1:1", settings))
    # ...and refuses a CA it cannot load, at once rather than at the first connection.
    missing = _settings(**{**settings.model_dump(), "kafka_ssl_ca_file": tmp_path / "none.pem"})
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location"):
        Producer(client_config("127.0.0.1:1", missing))
