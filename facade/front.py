"""The facade's outermost ASGI layer, in pure ASGI (no BaseHTTPMiddleware: it costs a task per
request and breaks streaming).

For every HTTP request: the request id (``x-request-id`` in, or a new one; echoed back), the body
size limit (413 from Content-Length before reading, or while reading a chunked body) and one access
log line when enabled.

Predict requests (v1 ``:predict``, v2 ``/infer``) are answered here directly. FastAPI's
per-request machinery (middleware layers, route scan, dependency solving) costs more than the rest
of a predict call: measured here, a null FastAPI route tops out at a third of a raw ASGI handler.
So ``POST /v1/models/{name}[/versions/{v}]:predict`` and ``POST /v2/models/{name}[/versions/{v}]
/infer`` are matched with one regex each and handed to ``V1Predict`` / ``V2Infer``, the adapters
behind the documented FastAPI routes; everything else goes on to FastAPI.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import InfernoError, InvalidInput, PayloadTooLarge
from common.logging import request_id_var
from facade.errors import error_body, error_status
from facade.v1_protocol import V1Predict
from facade.v2_protocol import HEADER_LENGTH, V2Infer

__all__ = ["Front"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("inferno.access")

# Request ids: a random per-process prefix and a counter. uuid4() reads os.urandom, a syscall
# that drops the GIL on every request and then waits to get it back from the model thread.
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)

_V1_PREDICT = re.compile(r"^/v1/models/([^/]+?)(?:/versions/([1-9][0-9]{0,9}))?:predict$")
_V2_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([1-9][0-9]{0,9}))?/infer$")
_JSON = (b"content-type", b"application/json")
_OCTETS = (b"content-type", b"application/octet-stream")


class Front:
    def __init__(self, app: ASGIApp, v1: V1Predict, v2: V2Infer, max_body_bytes: int,
                 access_log: bool) -> None:
        self.app = app
        self.v1 = v1
        self.v2 = v2
        self.max_body = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        length = None
        v2_header: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
            elif key == b"inference-header-content-length":
                v2_header = value
        request_id = request_id or f"{_ID_PREFIX}-{next(_ids):x}"
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        # The server enforces Content-Length; only a body without one is counted while read.
        body_receive = receive if length is not None else self._limited(receive)
        path = scope["path"]
        post = scope["method"] == "POST"
        v1 = _V1_PREDICT.match(path) if post and path.startswith("/v1/") else None
        v2 = _V2_INFER.match(path) if post and v1 is None and path.startswith("/v2/") else None
        try:
            if length is not None and length > self.max_body:
                status = 413
                await _send(send, status, error_body(
                    PayloadTooLarge.code, self._too_large(length), path), [_JSON, id_header])
            elif v1 is not None or v2 is not None:
                match = v1 if v1 is not None else v2
                assert match is not None
                name, version = match.group(1), match.group(2)
                headers = [_JSON, id_header]
                try:
                    body = await _read_body(body_receive)
                    pinned = int(version) if version else None
                    if v1 is not None:
                        payload = await self.v1(name, pinned, body)
                    else:
                        answer = await self.v2(name, pinned, body, _length_of(v2_header))
                        payload = answer.body
                        if answer.header_length is not None:
                            headers = [_OCTETS, id_header, (
                                b"inference-header-content-length",
                                str(answer.header_length).encode())]
                    status = 200
                except InfernoError as exc:
                    status, payload = error_status(exc.status_code, path), error_body(
                        exc.code, exc.message, path)
                except Exception as exc:
                    log.exception("predict %s failed unexpectedly", name)
                    status, payload = 500, error_body(
                        "internal", f"Internal error: {type(exc).__name__}", path)
                await _send(send, status, payload, headers)
            else:
                async def send_with_id(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        message["headers"] = [*message.get("headers", ()), id_header]
                    await send(message)

                await self.app(scope, body_receive, send_with_id)
        finally:
            if self.access_log:
                access_log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                    "request_id": request_id, "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3)})
            request_id_var.reset(token)

    def _too_large(self, size: int) -> str:
        return f"Request body of {size} bytes exceeds the limit of {self.max_body} bytes"

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(self._too_large(seen))
            return message

        return receive_limited


async def _send(send: Send, status: int, body: bytes,
                headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _length_of(header: bytes | None) -> int | None:
    if header is None:
        return None
    if not header.isdigit():
        raise InvalidInput(f"{HEADER_LENGTH} must be a number of bytes, "
                           f"got {header.decode('latin-1')!r}")
    return int(header)


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)
