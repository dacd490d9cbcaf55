"""The facade's outermost ASGI layer, in pure ASGI (no BaseHTTPMiddleware: it costs a task per
request and breaks streaming).

For every HTTP request: the request id (``x-request-id`` in when it is 1-128 visible ASCII
characters, else a new one, so nothing raw from the client reaches a response header or a log
line; echoed back), the body size limit (413 from Content-Length before reading, or while reading
a chunked body) and one access log line when enabled.

Predict requests are answered here, through the data plane: FastAPI's per-request machinery
(middleware layers, route scan, dependency solving) costs more than the rest of a predict call
(measured here, a null FastAPI route tops out at a third of a raw ASGI handler). ``PREDICT_ROUTES``
lists them, each with the protocol call that reads its body; ``facade.openapi`` documents the same
table in the OpenAPI schema. Here too, before the body is read: the API token when one is set
(``facade.auth``: one header lookup in the loop that reads the others and one
``hmac.compare_digest``) and the model name's syntax (422). Everything else goes on to FastAPI.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import InfernoError, InvalidInput, PayloadTooLarge
from common.logging import request_id_var
from common.model.config import MODEL_NAME
from facade.auth import Guard
from facade.data_plane import DataPlane
from facade.disconnects import DisconnectWatch
from facade.errors import HttpError, error_headers, http_error, unexpected_error
from facade.v1_protocol import V1Call
from facade.v2_protocol import V2Call

__all__ = ["PREDICT_ROUTES", "Front", "PredictRoute"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("inferno.access")

# Request ids: a random per-process prefix and a counter. uuid4() reads os.urandom, a syscall
# that drops the GIL on every request and then waits to get it back from the model thread.
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)

CLIENT_LEFT = 499
"""The access log's status of a predict whose client went away before its answer (nginx's)."""
_JSON = (b"content-type", b"application/json")
_OCTETS = (b"content-type", b"application/octet-stream")
_V2_HEADER_LENGTH = b"inference-header-content-length"
_PARAMETERS = {"{name}": r"([^/]+?)", "{version}": r"([^/]+)"}
_MODEL_NAME = re.compile(MODEL_NAME)
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(rb"[!-~]{1,%d}" % MAX_REQUEST_ID)
"""A client's request id is kept only when it is visible ASCII (no space, CR, LF, NUL, ...)."""


@dataclass(frozen=True)
class PredictRoute:
    """One predict endpoint: its OpenAPI path template and the protocol that reads its body."""

    path: str
    protocol: str
    """``v1`` or ``v2``: which ``ProtocolCall`` answers it."""
    summary: str

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{name\}|\{version\})", self.path)
        return re.compile("^" + "".join(_PARAMETERS.get(p, re.escape(p)) for p in parts) + "$")


PREDICT_ROUTES = (
    PredictRoute("/v1/models/{name}:predict", "v1", "Predict with the active version"),
    PredictRoute("/v1/models/{name}/versions/{version}:predict", "v1",
                 "Predict with a pinned version"),
    PredictRoute("/v2/models/{name}/infer", "v2", "Inference (active version)"),
    PredictRoute("/v2/models/{name}/versions/{version}/infer", "v2", "Inference (pinned version)"),
)


class Front:
    def __init__(self, app: ASGIApp, plane: DataPlane, max_body_bytes: int,
                 access_log: bool, guard: Guard | None = None) -> None:
        self.app = app
        self.plane = plane
        self.max_body = max_body_bytes
        self.access_log = access_log
        self._guard = guard if guard is not None and guard.guards_api else None
        self._routes = [(r.pattern, r.protocol) for r in PREDICT_ROUTES]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        length = None
        v2_header: str | None = None
        authorization: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    request_id = value.decode("ascii")
            elif key == b"authorization":
                authorization = value
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
            elif key == _V2_HEADER_LENGTH:
                v2_header = value.decode("latin-1")
        request_id = request_id or f"{_ID_PREFIX}-{next(_ids):x}"
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        # The server enforces Content-Length; only a body without one is counted while read.
        body_receive = receive if length is not None else self._limited(receive)
        path = scope["path"]
        try:
            if length is not None and length > self.max_body:
                status, payload = http_error(PayloadTooLarge(self._too_large(length)), path)
                await _send(send, status, payload, [_JSON, id_header])
                return
            predict = self._match(path)
            if predict is None:
                async def send_with_id(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        message["headers"] = [*message.get("headers", ()), id_header]
                    await send(message)

                await self.app(scope, body_receive, send_with_id)
                return
            protocol, name, version = predict
            headers = [_JSON, id_header]
            try:
                if self._guard is not None:
                    self._guard.check_api(authorization)
                if not _MODEL_NAME.match(name):
                    raise InvalidInput(f"path.name: {name[:80]!r} is not a model name (letters, "
                                       f"digits, '_' and '-', at most 64)")
                if scope["method"] != "POST":
                    headers.append((b"allow", b"POST"))
                    raise HttpError(405, "Method Not Allowed")
                pinned = _pinned(version)
                body = await _read_body(body_receive)
                watch = DisconnectWatch(body_receive)
                try:
                    if protocol == "v1":
                        payload = await self.plane.infer(name, pinned, V1Call(body), request_id)
                    else:
                        answer = await self.plane.infer(name, pinned, V2Call(body, v2_header),
                                                        request_id)
                        payload = answer.body
                        if answer.header_length is not None:
                            headers = [_OCTETS, id_header, (
                                _V2_HEADER_LENGTH, str(answer.header_length).encode())]
                except asyncio.CancelledError:
                    if not watch.absorb():
                        raise
                    status = CLIENT_LEFT
                    return  # nobody to answer
                finally:
                    watch.stop()
                status = 200
            except InfernoError as exc:
                status, payload = http_error(exc, path)
                headers += error_headers(exc)
            except Exception as exc:
                log.exception("predict %s failed unexpectedly", name)
                status, payload = http_error(unexpected_error(exc), path)
            await _send(send, status, payload, headers)
        finally:
            if self.access_log:
                access_log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                    "request_id": request_id, "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3)})
            request_id_var.reset(token)

    def _match(self, path: str) -> tuple[str, str, str | None] | None:
        """(protocol, model name, pinned version or None) of a predict path; None otherwise."""
        if not path.startswith(("/v1/", "/v2/")):
            return None
        for pattern, protocol in self._routes:
            match = pattern.match(path)
            if match is not None:
                groups = match.groups()
                return protocol, groups[0], groups[1] if len(groups) > 1 else None
        return None

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


def _pinned(version: str | None) -> int | None:
    """The version a predict path pins, checked as the FastAPI routes check theirs."""
    if version is None:
        return None
    try:
        number = int(version)
    except ValueError:
        raise InvalidInput("path.version: Input should be a valid integer, unable to parse "
                           "string as an integer") from None
    if number < 1:
        raise InvalidInput("path.version: Input should be greater than or equal to 1")
    return number


async def _send(send: Send, status: int, body: bytes,
                headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


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
