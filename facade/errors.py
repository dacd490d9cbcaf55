"""Every error's HTTP status and body, per protocol: ``v1_error``, ``v2_error``, ``openai_error``.

v1 (and every path outside the others): the status of the ``InfernoError`` and ``{"error":
{"code", "message"}}``. v2 (the Open Inference Protocol, paths under ``/v2``): ``{"error":
"message"}``, and 400 for every invalid request (v1: 422). OpenAI (paths under ``/openai``):
``{"error": {"message", "type", "param", "code"}}``, 400 for every invalid request, so that the
``openai`` client raises its ``BadRequestError``. A predict answers by its protocol object's
``refuse`` (``facade.protocol.HttpProtocol``), which calls its protocol's function here; the
FastAPI handlers below pick one by path (``http_error``): framework errors (unknown route,
pydantic validation of admin bodies) are first expressed as ``InfernoError``s.

A 401 carries ``WWW-Authenticate: Bearer``, a 503 ``Retry-After`` and an ``HttpError`` its own
headers (a predict's 405, ``Allow``): ``error_headers``. Every message is redacted
(``common.logging.redact``): an error that quotes a URL never shows its password.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from common.errors import (
    InfernoError,
    InvalidInput,
    InvalidJson,
    ModelFailed,
    ModelNotFound,
)
from common.logging import redact

__all__ = ["JSON_HEADER", "HttpError", "InvalidParam", "error_answer", "error_headers",
           "http_error", "install_error_handlers", "openai_error", "unexpected_error",
           "v1_error", "v2_error", "v2_message"]

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
JSON_HEADER = (b"content-type", b"application/json")


class HttpError(InfernoError):
    """An HTTP-level error (404 for an unknown route, 405, ...) in the error tree."""

    def __init__(self, status: int, message: str,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = _HTTP_CODES.get(status, "http_error")
        self.headers = headers
        """What its answer carries besides (a 405's ``Allow``)."""


class InvalidParam(InvalidInput):
    """An invalid request that names the body field at fault (the OpenAI error's ``param``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def unexpected_error(exc: Exception) -> InfernoError:
    """What a client sees of an exception that is not an ``InfernoError``: its class, no more."""
    return InfernoError(f"Internal error: {type(exc).__name__}")


RETRY_AFTER_S = 1
"""``Retry-After`` of every 503 (overloaded, no worker, broker or state down): soon enough for
a client to come back quickly, late enough that a retrying client backs off from a full queue."""


def error_headers(error: InfernoError) -> list[tuple[bytes, bytes]]:
    """The headers an error's response carries beyond its body's content type."""
    if error.status_code == 503:
        return [(b"retry-after", b"%d" % RETRY_AFTER_S)]
    if error.status_code == 401:
        return [(b"www-authenticate", b"Bearer")]
    return list(error.headers) if isinstance(error, HttpError) else []


def v1_error(error: InfernoError) -> tuple[int, bytes]:
    """The HTTP status and JSON body of ``error`` in v1 (and everywhere outside ``/v2``)."""
    return error.status_code, orjson.dumps(
        {"error": {"code": error.code, "message": redact(error.message)}})


def v2_error(error: InfernoError) -> tuple[int, bytes]:
    """The HTTP status and JSON body of ``error`` in the Open Inference Protocol."""
    status = 400 if error.status_code == 422 else error.status_code
    return status, orjson.dumps({"error": redact(v2_message(error))})


def v2_message(error: InfernoError) -> str:
    """``error``'s message as the Open Inference Protocol says it (REST and gRPC): Triton's own
    phrase first where its clients and scripts match one, then ours."""
    if isinstance(error, ModelNotFound) and error.model is not None:
        return f"Request for unknown model: '{error.model}' is not found: {error.message}"
    if isinstance(error, ModelFailed) and error.loading is not None:
        return f"failed to load '{error.loading}': {error.message}"
    if isinstance(error, InvalidInput) and error.version is not None:
        return (f"failed to get model version from specified version string "
                f"'{error.version}': {error.message}")
    return error.message


_INVALID = frozenset({413, 415, 422})
"""What OpenAI answers 400 (``invalid_request_error``) and the ``openai`` client raises as
``BadRequestError``: a body too large, in a coding not read here, or invalid."""


def openai_error(error: InfernoError) -> tuple[int, bytes]:
    """The HTTP status and JSON body of ``error`` in the OpenAI API; ``code`` is Inferno's."""
    status = 400 if error.status_code in _INVALID else error.status_code
    kind = ("server_error" if status >= 500 else
            "authentication_error" if status == 401 else "invalid_request_error")
    param = (error.param if isinstance(error, InvalidParam) else
             "model" if isinstance(error, ModelNotFound) else None)
    return status, orjson.dumps({"error": {"message": redact(error.message), "type": kind,
                                           "param": param, "code": error.code}})


def error_answer(error: InfernoError, encode: Callable[[InfernoError], tuple[int, bytes]]
                 ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The HTTP answer of ``error``: its status and JSON body as ``encode`` (``v1_error``,
    ``v2_error``) writes them, and its headers."""
    status, body = encode(error)
    return status, body, [JSON_HEADER, *error_headers(error)]


def http_error(error: InfernoError, path: str) -> tuple[int, bytes]:
    """The HTTP status and JSON body of ``error`` for a request to ``path`` that no protocol
    object answers (a FastAPI route)."""
    if path.startswith("/v2"):
        return v2_error(error)
    return openai_error(error) if path.startswith("/openai/") else v1_error(error)


def _response(request: Request, error: InfernoError) -> Response:
    status, body = http_error(error, request.url.path)
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in error_headers(error)})


async def _inferno_error(request: Request, exc: InfernoError) -> Response:
    return _response(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(err["type"] == "json_invalid" for err in errors):
        # The admin bodies follow the predict bodies' rule: not JSON at all is a 400.
        return _response(request, InvalidJson(
            "Request body is not valid JSON: " + "; ".join(
                str(err.get("ctx", {}).get("error", err["msg"])) for err in errors)))
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"] if p != "body")
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    versions = [err["input"] for err in errors if err["type"] == "version"]  # routing.Version
    message = "; ".join(parts)
    return _response(request, InvalidInput(message, version=versions[0] if versions else None))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc.__cause__, InfernoError):
        # FastAPI turns any error while reading a body into a 400; ours (413) says more.
        return _response(request, exc.__cause__)
    if isinstance(exc.__cause__, (RecursionError, UnicodeDecodeError)):
        # json.loads of an admin body nested thousands of levels deep, or not UTF-8.
        return _response(request, InvalidJson(
            f"Request body is not valid JSON: {type(exc.__cause__).__name__}"))
    return _response(request, HttpError(exc.status_code, str(exc.detail)))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _response(request, unexpected_error(exc))


# Starlette calls a handler only with an instance of the class it is registered for (found by
# the exception's MRO), so each handler takes that class: ``Any`` states what the registration
# guarantees, where a check inside would be dead code.
_HANDLERS: dict[type[Exception], Callable[[Request, Any], Awaitable[Response]]] = {
    InfernoError: _inferno_error,
    RequestValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}


def install_error_handlers(app: FastAPI) -> None:
    for cls, handler in _HANDLERS.items():
        app.add_exception_handler(cls, handler)
