"""TLS options built from the settings (common/tls.py): the broker's SSL context and Redis's
keyword arguments. The local services have no TLS listener, so what is checked here is what the
clients are handed; tests/integration/test_secrets.py checks that an ``amqps://`` URL to a plain
port fails typed and redacted."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.backends import create_broker, create_state_store
from common.settings import CommonSettings
from common.tls import broker_ssl_context, redis_ssl_options
from tests.pki import CA_NAME, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate (with its key) it signed."""
    return make_pki(tmp_path_factory.mktemp("pki"), "inferno-client")


def test_amqps_context_trusts_the_ca_and_verifies(pki: dict[str, Path]) -> None:
    settings = CommonSettings(broker_url="amqps://u:p@broker:5671/",
                              broker_tls_ca_file=pki["ca"], broker_tls_cert_file=pki["cert"],
                              broker_tls_key_file=pki["key"])
    context = broker_ssl_context(settings)
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(part[0] for part in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": CA_NAME} in subjects
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_amqps_without_files_keeps_the_system_trust_store() -> None:
    assert broker_ssl_context(CommonSettings(broker_url="amqps://u:p@broker/")) is None
    assert broker_ssl_context(CommonSettings(broker_url="amqp://u:p@broker/")) is None


def test_a_key_that_does_not_match_the_certificate_fails_at_start(pki: dict[str, Path]) -> None:
    settings = CommonSettings(broker_url="amqps://u:p@broker/", broker_tls_cert_file=pki["cert"],
                              broker_tls_key_file=pki["ca_key"])
    with pytest.raises(ssl.SSLError):
        broker_ssl_context(settings)


def test_rediss_options(pki: dict[str, Path]) -> None:
    settings = CommonSettings(redis_url="rediss://:p@redis:6380/0", redis_tls_ca_file=pki["ca"],
                              redis_tls_cert_file=pki["cert"], redis_tls_key_file=pki["key"])
    assert redis_ssl_options(settings) == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": str(pki["ca"]),
        "ssl_certfile": str(pki["cert"]), "ssl_keyfile": str(pki["key"])}
    assert redis_ssl_options(CommonSettings(redis_url="rediss://redis/0")) == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    assert redis_ssl_options(CommonSettings(redis_url="redis://redis/0")) == {}


def test_the_clients_get_the_options(pki: dict[str, Path]) -> None:
    """Built, not connected: the broker holds the context, redis-py's pool the CA."""
    settings = CommonSettings(broker_url="amqps://u:p@broker/", broker_tls_ca_file=pki["ca"],
                              redis_url="rediss://redis:6380/0", redis_tls_ca_file=pki["ca"])
    broker = create_broker(settings)
    assert isinstance(getattr(broker, "_ssl_context", None), ssl.SSLContext)
    store = create_state_store(settings)
    pool = store._redis.connection_pool  # type: ignore[attr-defined]
    assert pool.connection_kwargs["ssl_ca_certs"] == str(pki["ca"])
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"


@pytest.mark.parametrize(("changes", "says"), [
    ({"broker_url": "amqp://h/", "broker_tls_ca_file": "ca.pem"}, "does not start with amqps://"),
    ({"broker_tls_ca_file": "ca.pem"}, "does not start with amqps://"),
    ({"redis_url": "redis://h/0", "redis_tls_ca_file": "ca.pem"}, "does not start with rediss://"),
    ({"broker_url": "amqps://h/", "broker_tls_cert_file": "c.pem"}, "go together"),
    ({"redis_url": "rediss://h/0", "redis_tls_key_file": "k.pem"}, "go together"),
])
def test_tls_settings_are_checked_at_start(changes: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        CommonSettings(**changes)  # type: ignore[arg-type]
