"""Secrets never show: tokens and URL passwords stay out of logs, error bodies and /metrics.

Each test sets a recognisable secret, drives what could leak it (requests with good and bad
tokens, connection errors of the broker and the state store, invalid settings) and looks for the
secret string in every log line as written (``JsonFormatter``, the plain format), every response
body and header, and the metrics text.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from pydantic import ValidationError

from common.errors import BrokerUnavailable, StateUnavailable
from common.logging import JsonFormatter, RedactingFormatter, redact
from common.settings import FacadeSettings
from common.state.redis_store import RedisStateStore
from common.transport.amqp.broker import AmqpBroker
from tests.integration.conftest import Start, x_rows

ADMIN = "ADMINSECRET-7f3a9c"
API = "APISECRET-1b2c3d"
PASSWORD = "PWSECRET-9e8d7c"
SECRETS = (ADMIN, API, PASSWORD)


def written(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as both formatters write it (tracebacks included)."""
    json, plain = JsonFormatter(), RedactingFormatter("%(name)s %(message)s")
    return "\n".join(f"{json.format(r)}\n{plain.format(r)}" for r in caplog.records)


def assert_secret_free(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked: {text[:2000]}"


def response_text(response: httpx.Response) -> str:
    return f"{response.headers!r}\n{response.text}"


async def test_tokens_stay_out_of_logs_bodies_and_metrics(
        start_server: Start, caplog: pytest.LogCaptureFixture) -> None:
    """Tried: predict (fast path), metadata and admin calls, v1 and v2, with the right tokens and
    with wrong ones that contain them (one character more, one less, the other token), as
    ``Bearer`` and as another scheme; then /metrics. The Authorization header is never echoed."""
    caplog.set_level(logging.DEBUG)
    _, client = await start_server(admin_token=ADMIN, api_token=API, access_log=True,
                                   broker_url=f"amqp://guest:{PASSWORD}@127.0.0.1:1/",
                                   redis_url=f"redis://:{PASSWORD}@127.0.0.1:1/0")
    texts: list[str] = []
    for authorization in (f"Bearer {API}", f"Bearer {ADMIN}", f"Bearer {API}x",
                          f"Bearer {ADMIN[:-1]}", f"Basic {ADMIN}", ADMIN, f"Bearer  {API} "):
        headers = {"authorization": authorization}
        for response in (
            await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)},
                              headers=headers),
            await client.post("/v1/models/mlp:predict", json={"inputs": {"x": {"b64": "@"}}},
                              headers=headers),
            await client.post("/v2/models/mlp/infer", json={"inputs": []}, headers=headers),
            await client.get("/v1/models", headers=headers),
            await client.get("/v2/models/mlp", headers=headers),
            await client.post("/v1/models:load", json={"name": "mlp", "version": 1},
                              headers=headers),
            await client.post("/v1/models:load", json={"name": "../etc"}, headers=headers),
            await client.post("/v2/repository/models/mlp/load", headers=headers),
        ):
            texts.append(response_text(response))
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert any("unauthorized" in t for t in texts) and any('"model":"mlp"' in t for t in texts)
    assert_secret_free(metrics.text, written(caplog), *texts)


async def test_a_broker_url_password_is_redacted_in_errors_and_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    """Tried: ``amqps://`` to RabbitMQ's plain port (no TLS listener: the handshake fails) and
    ``amqp://`` to a port nobody listens on. Typed BrokerUnavailable, the password nowhere."""
    caplog.set_level(logging.DEBUG)
    for url in (f"amqps://guest:{PASSWORD}@127.0.0.1:5672/",
                f"amqp://guest:{PASSWORD}@127.0.0.1:1/"):
        broker = AmqpBroker(url)
        with pytest.raises(BrokerUnavailable) as info:
            await broker.start()
        await broker.aclose()
        assert_secret_free(info.value.message, str(info.value), repr(info.value.__cause__))
        assert "Message broker unavailable" in info.value.message
    assert_secret_free(written(caplog))


async def test_a_redis_url_password_is_redacted_in_errors_and_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    """Tried: ``rediss://`` to Redis's plain port and ``redis://`` to a closed port."""
    caplog.set_level(logging.DEBUG)
    for url in (f"rediss://:{PASSWORD}@127.0.0.1:6379/0", f"redis://:{PASSWORD}@127.0.0.1:1/0"):
        store = RedisStateStore(url)
        with pytest.raises(StateUnavailable) as info:
            await store.start()
        await store.aclose()
        assert_secret_free(info.value.message, str(info.value), repr(info.value.__cause__))
    assert_secret_free(written(caplog))


def test_settings_never_show_secrets() -> None:
    settings = FacadeSettings(broker_url=f"amqp://guest:{PASSWORD}@h/",
                              redis_url=f"redis://:{PASSWORD}@h/0", admin_token=ADMIN,
                              api_token=API)
    assert_secret_free(repr(settings), str(settings))
    with pytest.raises(ValidationError) as info:
        FacadeSettings(broker_url=f"amqp://guest:{PASSWORD}@h/", admin_token=ADMIN, port="x")
    assert_secret_free(str(info.value))
    with pytest.raises(ValidationError) as info:  # a TLS file for a URL without TLS
        FacadeSettings(broker_url=f"amqp://guest:{PASSWORD}@h/", broker_tls_ca_file="ca.pem")
    assert_secret_free(str(info.value))


def test_settings_read_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERNO_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("INFERNO_API_TOKEN", API)
    settings = FacadeSettings()
    assert settings.admin_token is not None and settings.api_token is not None
    assert (settings.admin_token.get_secret_value(), settings.api_token.get_secret_value()) == (
        ADMIN, API)


@pytest.mark.parametrize(("text", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("to amqps://u:p%40ss@h/v and rediss://:x@r:6380",
     "to amqps://u:***@h/v and rediss://:***@r:6380"),
    ("amqp://h:5672/ no password", "amqp://h:5672/ no password"),
    ("http://127.0.0.1:8000/v1/models", "http://127.0.0.1:8000/v1/models"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_every_log_line_is_redacted() -> None:
    record = logging.makeLogRecord({"name": "aio_pika", "levelno": logging.INFO,
                                    "levelname": "INFO", "msg": "connecting to %s",
                                    "args": (f"amqp://guest:{PASSWORD}@h/",)})
    assert_secret_free(JsonFormatter().format(record), RedactingFormatter().format(record))
