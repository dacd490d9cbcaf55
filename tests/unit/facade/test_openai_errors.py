"""Every error of the error tree in OpenAI's shape, with the status the ``openai`` client maps to
its exception classes and the headers (``Retry-After``, ``WWW-Authenticate``) its retries and
users read; the same for the FastAPI routes under ``/openai``."""

from __future__ import annotations

import orjson
import pytest

from common.errors import (
    DeadlineExceeded,
    InfernoError,
    InvalidInput,
    ModelFailed,
    ModelNotLoaded,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedEncoding,
)
from facade.errors import HttpError, http_error
from facade.openai_protocol import OpenAIProtocol

PROTOCOL = OpenAIProtocol(max_inputs=2048, truncate=True)


@pytest.mark.parametrize(("error", "status", "kind", "param", "headers"), [
    (InvalidInput("bad"), 400, "invalid_request_error", None, {}),
    (PayloadTooLarge("big"), 400, "invalid_request_error", None, {}),
    (UnsupportedEncoding("br"), 400, "invalid_request_error", None, {}),
    (Unauthorized("who"), 401, "authentication_error", None, {b"www-authenticate": b"Bearer"}),
    (ModelNotLoaded("not loaded", "minilm"), 404, "invalid_request_error", "model", {}),
    (HttpError(405, "Method Not Allowed", ((b"allow", b"POST"),)), 405,
     "invalid_request_error", None, {b"allow": b"POST"}),
    (ModelFailed("raised"), 500, "server_error", None, {}),
    (InfernoError("Internal error: KeyError"), 500, "server_error", None, {}),
    (Overloaded("full"), 503, "server_error", None, {b"retry-after": b"1"}),
    (Unavailable("no worker"), 503, "server_error", None, {b"retry-after": b"1"}),
    (DeadlineExceeded("late"), 504, "server_error", None, {}),
])
def test_each_error_answers_in_openais_shape(error: InfernoError, status: int, kind: str,
                                             param: str | None,
                                             headers: dict[bytes, bytes]) -> None:
    answered, body, answer_headers = PROTOCOL.refuse(error)
    assert answered == status
    assert orjson.loads(body) == {"error": {"message": error.message, "type": kind,
                                            "param": param, "code": error.code}}
    assert dict(answer_headers) == {b"content-type": b"application/json", **headers}


def test_the_fastapi_routes_under_openai_answer_the_same() -> None:
    status, body = http_error(HttpError(404, "Not Found"), "/openai/v1/nothing")
    assert status == 404
    assert orjson.loads(body)["error"] == {"message": "Not Found", "type": "invalid_request_error",
                                           "param": None, "code": "not_found"}
    assert set(orjson.loads(http_error(InvalidInput("x"), "/v1/models")[1])["error"]) == {
        "code", "message"}
