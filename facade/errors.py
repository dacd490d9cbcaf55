"""One place that turns every error into the HTTP error body ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from common.errors import InfernoError

__all__ = ["error_body", "error_status", "install_error_handlers"]

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(code: str, message: str, path: str = "") -> bytes:
    """v1: ``{"error": {"code", "message"}}``; the v2 protocol: ``{"error": "message"}``."""
    if path.startswith("/v2"):
        return orjson.dumps({"error": message})
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_status(status: int, path: str) -> int:
    """The v2 protocol answers every invalid request with 400 (v1: 422)."""
    return 400 if status == 422 and path.startswith("/v2") else status


def _error_response(request: Request, status: int, code: str, message: str) -> Response:
    path = request.url.path
    return Response(error_body(code, message, path), status_code=error_status(status, path),
                    media_type="application/json")


async def _inferno_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfernoError)
    return _error_response(request, exc.status_code, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "body")
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return _error_response(request, 422, "invalid_input", "; ".join(parts))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, InfernoError):
        # FastAPI turns any error while reading a body into a 400; ours (413) says more.
        return await _inferno_error(request, exc.__cause__)
    return _error_response(request, exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                          str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _error_response(request, 500, "internal", f"Internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InfernoError, _inferno_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
