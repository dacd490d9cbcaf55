"""One function, ``http_error``, turns every error into its HTTP status and body, per protocol.

v1 (and every non-v2 path): the status of the ``InfernoError`` and ``{"error": {"code",
"message"}}``. v2 (the Open Inference Protocol, paths under ``/v2``): ``{"error": "message"}``,
and 400 for every invalid request (v1: 422). The ASGI front calls it for predict requests, and
the FastAPI handlers below for everything else: framework errors (unknown route, pydantic
validation of admin bodies) are first expressed as ``InfernoError``s.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from common.errors import InfernoError, InvalidInput

__all__ = ["HttpError", "http_error", "install_error_handlers", "unexpected_error"]

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


def http_error(error: InfernoError, path: str) -> tuple[int, bytes]:
    """The HTTP status and JSON body of ``error`` for a request to ``path``."""
    if path.startswith("/v2"):
        status = 400 if error.status_code == 422 else error.status_code
        return status, orjson.dumps({"error": error.message})
    return error.status_code, orjson.dumps(
        {"error": {"code": error.code, "message": error.message}})


def _response(request: Request, error: InfernoError) -> Response:
    status, body = http_error(error, request.url.path)
    return Response(body, status_code=status, media_type="application/json")


async def _inferno_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfernoError)
    return _response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "body")
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return _response(request, InvalidInput("; ".join(parts)))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, InfernoError):
        # FastAPI turns any error while reading a body into a 400; ours (413) says more.
        return _response(request, exc.__cause__)
    return _response(request, HttpError(exc.status_code, str(exc.detail)))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _response(request, unexpected_error(exc))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InfernoError, _inferno_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
