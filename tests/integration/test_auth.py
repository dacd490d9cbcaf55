"""Bearer tokens through HTTP: INFERNO_ADMIN_TOKEN on the admin calls, INFERNO_API_TOKEN on predict
and metadata (the predict fast path included), the non-loopback rule, and what stays open.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import httpx
import pytest

from facade import auth
from facade.auth import Guard, is_loopback
from tests.integration.conftest import Start, error_of, x_rows

ADMIN = "adm-Zq7-secret-token"
API = "api-Kx9-secret-token"

# Each admin route, with a body it accepts (every call answers 200 once authorised).
V1_ADMIN = [
    ("/v1/models:load", {"name": "mlp", "version": 1}),
    ("/v1/models:activate", {"name": "mlp", "version": 1}),
    ("/v1/models:unload", {"name": "mlp", "version": 1}),
]
V2_ADMIN = [
    ("/v2/repository/index", None),
    ("/v2/repository/models/bag/unload", None),
    ("/v2/repository/models/bag/load", None),
]
ADMIN_ROUTES = V1_ADMIN + V2_ADMIN

BAG = {"inputs": {"tokens": {"data": [[1, 2]]}, "mask": {"data": [[True, True]]}}}
V2_BAG = {"inputs": [
    {"name": "tokens", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
    {"name": "mask", "datatype": "BOOL", "shape": [1, 2], "data": [True, True]}]}
# (method, path, body) of every predict and metadata route, v1 and v2.
API_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/models/bag:predict", BAG),
    ("POST", "/v1/models/bag/versions/1:predict", BAG),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/bag", None),
    ("GET", "/v1/models/bag/active", None),
    ("POST", "/v2/models/bag/infer", V2_BAG),
    ("POST", "/v2/models/bag/versions/1/infer", V2_BAG),
    ("GET", "/v2", None),
    ("GET", "/v2/models/bag", None),
    ("GET", "/v2/models/bag/versions/1", None),
    ("GET", "/v2/models/bag/ready", None),
    ("GET", "/v2/models/bag/versions/1/ready", None),
    ("GET", "/v2/models/bag/config", None),
    ("GET", "/v2/models/bag/versions/1/config", None),
]
OPEN_ROUTES = ["/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready",
               "/metrics"]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response, path: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    if path.startswith("/v2"):
        assert set(body) == {"error"} and isinstance(body["error"], str)
    else:
        assert error_of(response)["code"] == "unauthorized"
    assert ADMIN not in response.text and API not in response.text


async def call(client: httpx.AsyncClient, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


async def test_admin_routes_need_the_admin_token(start_server: Start) -> None:
    """Tried: each admin route with no Authorization header, or a token that is not the admin
    token (another, one character more, one less, empty, another scheme). 401 each time, and
    nothing changed."""
    _, client = await start_server(admin_token=ADMIN)
    wrong: list[dict[str, str] | None] = [
        None, bearer("wrong-token"), bearer(f"{ADMIN}x"), bearer(ADMIN[:-1]), bearer(""),
        {"authorization": f"Basic {ADMIN}"}, {"authorization": ADMIN}]
    for path, body in ADMIN_ROUTES:
        for headers in wrong:
            assert_unauthorized(await call(client, "POST", path, body, headers), path)
    # The token is checked before the body is validated: an invalid body says nothing either.
    assert_unauthorized(await call(client, "POST", "/v1/models:load", {"name": "../etc"}),
                        "/v1/models:load")
    models = (await client.get("/v1/models")).json()["models"]
    loaded = {m["name"]: m["loaded"] for m in models}
    assert (loaded["mlp"], loaded["bag"]) == ([2], [1]), "state must not change"


async def test_admin_routes_answer_with_the_admin_token(start_server: Start) -> None:
    """Tried: each admin route, in an order that changes something each time, with the token
    (the scheme in lower case once: RFC 6750 schemes are case-insensitive)."""
    _, client = await start_server(admin_token=ADMIN)
    for index, (path, body) in enumerate(ADMIN_ROUTES):
        headers = {"authorization": f"bearer {ADMIN}"} if index == 0 else bearer(ADMIN)
        response = await call(client, "POST", path, body, headers)
        assert response.status_code == 200, (path, response.text)
    # The API token is not an admin token.
    _, guarded = await start_server(admin_token=ADMIN, api_token=API)
    response = await call(guarded, "POST", "/v1/models:load", {"name": "mlp"}, bearer(API))
    assert_unauthorized(response, "/v1/models:load")


async def test_predict_and_metadata_need_the_api_token_when_set(start_server: Start) -> None:
    """Tried: each predict (the ASGI fast path) and metadata route without a token, with a wrong
    one and with a non-Bearer scheme: 401; with the API token, or the admin token: 200."""
    _, client = await start_server(admin_token=ADMIN, api_token=API)
    for method, path, body in API_ROUTES:
        for headers in (None, bearer("nope"), {"authorization": f"Basic {API}"}):
            assert_unauthorized(await call(client, method, path, body, headers), path)
        for token in (API, ADMIN):
            response = await call(client, method, path, body, bearer(token))
            assert response.status_code == 200, (path, response.text)


async def test_without_an_api_token_predict_and_metadata_are_open(start_server: Start) -> None:
    _, client = await start_server(admin_token=ADMIN)
    for method, path, body in API_ROUTES:
        response = await call(client, method, path, body)
        assert response.status_code == 200, (path, response.text)


async def test_health_and_metrics_stay_open(start_server: Start) -> None:
    _, client = await start_server(admin_token=ADMIN, api_token=API, host="0.0.0.0")
    for path in OPEN_ROUTES:
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
    assert (await client.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "inferno.example.com"])
async def test_a_public_address_without_admin_token_refuses_admin_calls(
        start_server: Start, host: str, caplog: pytest.LogCaptureFixture) -> None:
    """Tried: a server bound to an address others reach, with no admin token: every admin call
    is a 403 that says how to set a token, whatever Authorization header comes with it; the
    server said so when it started."""
    with caplog.at_level(logging.WARNING, logger="facade.auth"):
        _, client = await start_server(host=host)
    assert any("without INFERNO_ADMIN_TOKEN" in r.getMessage() for r in caplog.records)
    for (path, body), headers in [(r, h) for r in ADMIN_ROUTES
                                  for h in (None, bearer("anything"))]:
        response = await call(client, "POST", path, body, headers)
        assert response.status_code == 403, response.text
        message = (response.json()["error"] if path.startswith("/v2")
                   else error_of(response)["message"])
        if not path.startswith("/v2"):
            assert error_of(response)["code"] == "forbidden"
        assert "INFERNO_ADMIN_TOKEN" in message
    # Predict and metadata are not admin calls: they answer.
    assert (await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
            ).status_code == 200


async def test_a_public_address_with_the_admin_token_serves_admin_calls(
        start_server: Start) -> None:
    _, client = await start_server(host="0.0.0.0", admin_token=ADMIN)
    response = await client.post("/v1/models:load", json={"name": "mlp", "version": 1},
                                 headers=bearer(ADMIN))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
async def test_loopback_without_a_token_keeps_admin_open(start_server: Start,
                                                         host: str) -> None:
    """The quick start: ``inferno serve`` on 127.0.0.1 with no settings loads models freely."""
    _, client = await start_server(host=host)
    response = await client.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("empty", ["", "   "])
async def test_an_empty_token_is_no_token(start_server: Start, empty: str) -> None:
    """``INFERNO_ADMIN_TOKEN=`` (compose's ``${INFERNO_ADMIN_TOKEN:-}``) does not make an empty
    ``Authorization: Bearer`` the admin token: on a public address admin calls stay refused."""
    _, client = await start_server(host="0.0.0.0", admin_token=empty, api_token=empty)
    for headers in (None, {"authorization": "Bearer "}, {"authorization": "Bearer"}):
        response = await call(client, "POST", "/v1/models:load", {"name": "mlp"}, headers)
        assert response.status_code == 403, response.text
    assert (await client.get("/v1/models")).status_code == 200  # no API token: open


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.255.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.2", "example.com", ""]))


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both checks go through hmac.compare_digest, on bytes."""
    seen: list[tuple[object, object]] = []
    compare = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    from pydantic import SecretStr

    guard = Guard(SecretStr(ADMIN), SecretStr(API), "0.0.0.0")
    guard.check_api(f"Bearer {API}".encode())
    guard.check_admin(f"Bearer {ADMIN}".encode())
    assert seen == [(API.encode(), API.encode()), (ADMIN.encode(), ADMIN.encode())]
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in seen)
