"""One function, ``http_error``, turns every error into its HTTP status and body, per protocol.

v1 (and every non-v2 path): the status of the ``InfernoError`` and ``{"error": {"code",
"message"}}``. v2 (the Open Inference Protocol, paths under ``/v2``): ``{"error": "message"}``,
and 400 for every invalid request (v1: 422). The ASGI front calls it for predict requests, and
the FastAPI handlers below for everything else: framework errors (unknown route, pydantic
validation of admin bodies) are first expressed as ``InfernoError``s.

A 401 carries ``WWW-Authenticate: Bearer`` (``error_headers``). Every message is redacted
(``common.logging.redact``): an error that quotes a URL never shows its password.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from common.errors import InfernoError, InvalidInput, InvalidJson
from common.logging import redact

__all__ = ["HttpError", "error_headers", "http_error", "install_error_handlers",
           "unexpected_error"]

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class HttpError(InfernoError):
    """An HTTP-level error (404 for an unknown route, 405, ...) in the error tree."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = _HTTP_CODES.get(status, "http_error")


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
    return []


def http_error(error: InfernoError, path: str) -> tuple[int, bytes]:
    """The HTTP status and JSON body of ``error`` for a request to ``path``."""
    message = redact(error.message)
    if path.startswith("/v2"):
        status = 400 if error.status_code == 422 else error.status_code
        return status, orjson.dumps({"error": message})
    return error.status_code, orjson.dumps({"error": {"code": error.code, "message": message}})


def _response(request: Request, error: InfernoError) -> Response:
    status, body = http_error(error, request.url.path)
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in error_headers(error)})


async def _inferno_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfernoError)
    return _response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
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
    return _response(request, InvalidInput("; ".join(parts)))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InfernoError, _inferno_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
