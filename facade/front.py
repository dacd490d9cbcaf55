"""The facade's outermost ASGI layer, in pure ASGI (no BaseHTTPMiddleware: it costs a task per
request and breaks streaming).

For every HTTP request: the request id (``x-request-id`` in when it is 1-128 visible ASCII
characters, else a new one, so nothing raw from the client reaches a response header or a log
line; echoed back), the body size limit (413 from Content-Length before reading, or while reading
a chunked body) and one access log line when enabled.

Predict requests are answered here, through the data plane: FastAPI's per-request machinery
(middleware layers, route scan, dependency solving) costs more than the rest of a predict call
(measured here, a null FastAPI route tops out at a third of a raw ASGI handler). ``PREDICT_ROUTES``
lists them, each with the protocol object (``facade.protocol.HttpProtocol``) that makes the call
of its request and writes its answer; ``facade.openapi`` documents the same table in the OpenAPI
schema. Here too, before the body is read: the API token when one is set (``facade.auth``: one
header lookup in the loop that reads the others and one ``hmac.compare_digest``), the model
name's syntax (422) and the pinned version (``facade.protocol.version_of``). The routes whose
body names the model (``body_routes``: OpenAI's embeddings) are answered here the same way, by a
``facade.protocol.BodyRoutedProtocol`` that drives the data plane itself. Everything else goes
on to FastAPI.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import InfernoError, InvalidInput, PayloadTooLarge
from common.logging import request_id_var
from common.model.config import MODEL_NAME
from facade.auth import Guard
from facade.data_plane import DataPlane
from facade.disconnects import DisconnectWatch
from facade.encoding import accepted_coding, compress, inflate
from facade.errors import HttpError, error_answer, http_error, unexpected_error
from facade.protocol import (
    Answer,
    Answering,
    BodyRoutedProtocol,
    Headers,
    HttpProtocol,
    version_of,
)
from facade.v1_protocol import V1
from facade.v2_protocol import V2

__all__ = ["PREDICT_ROUTES", "Front", "PredictRoute", "request_id_of"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("inferno.access")

# Request ids: a random per-process prefix and a counter. uuid4() reads os.urandom, a syscall
# that drops the GIL on every request and then waits to get it back from the model thread.
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)

CLIENT_LEFT = 499
"""The access log's status of a predict whose client went away before its answer (nginx's)."""
_PARAMETERS = {"{name}": r"([^/]+?)", "{version}": r"([^/]+)"}
_MODEL_NAME = re.compile(MODEL_NAME)
_ALLOW_POST = ((b"allow", b"POST"),)
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(rb"[!-~]{1,%d}" % MAX_REQUEST_ID)
"""A client's request id is kept only when it is visible ASCII (no space, CR, LF, NUL, ...)."""


def request_id_of(given: bytes | None) -> str:
    """A request's id: the client's (``x-request-id``) when it may be echoed, else a new one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given.decode("ascii")
    return f"{_ID_PREFIX}-{next(_ids):x}"


@dataclass(frozen=True)
class PredictRoute:
    """One predict endpoint: its OpenAPI path template and the protocol that answers it."""

    path: str
    protocol: HttpProtocol[Any]
    summary: str

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{name\}|\{version\})", self.path)
        return re.compile("^" + "".join(_PARAMETERS.get(p, re.escape(p)) for p in parts) + "$")


PREDICT_ROUTES = (
    PredictRoute("/v1/models/{name}:predict", V1, "Predict with the active version"),
    PredictRoute("/v1/models/{name}/versions/{version}:predict", V1,
                 "Predict with a pinned version"),
    PredictRoute("/v2/models/{name}/infer", V2, "Inference (active version)"),
    PredictRoute("/v2/models/{name}/versions/{version}/infer", V2, "Inference (pinned version)"),
)

Predict = tuple[HttpProtocol[Any], str, str | None]
"""A predict path's protocol, model name and pinned version (``None``: the active one)."""
Start = Callable[[bytes, int | None], Awaitable[Any]]
"""What a predict awaits, from its body and its pinned version."""


class Front:
    def __init__(self, app: ASGIApp, plane: DataPlane, max_body_bytes: int,
                 access_log: bool, guard: Guard | None = None,
                 routes: Sequence[PredictRoute] = PREDICT_ROUTES,
                 compress_min_bytes: int | None = None,
                 body_routes: Mapping[str, BodyRoutedProtocol[Any]] | None = None) -> None:
        self.app = app
        self.plane = plane
        self.max_body = max_body_bytes
        self.compress_min = compress_min_bytes
        """Answers at least this long are compressed when the client asks; ``None``: never."""
        self.access_log = access_log
        self._guard = guard if guard is not None and guard.guards_api else None
        self._routes = [(r.pattern, r.protocol) for r in routes]
        self._bodied = dict(body_routes or {})
        """Path → the protocol of each route whose body names the model."""
        self._prefixes = tuple({"/" + path.split("/")[1] + "/"
                                for path in (*(r.path for r in routes), *self._bodied)})
        """The first segments of the predict paths: any other path is FastAPI's at once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = _read_headers(scope["headers"])
        token = request_id_var.set(head.request_id)
        started = time.perf_counter()
        status = 500
        try:
            bodied = self._bodied.get(scope["path"])
            predict = None if bodied is not None else self._match(scope["path"])
            # The server enforces Content-Length; only a body without one is counted while read.
            body = receive if head.length is not None else self._limited(receive)
            if head.length is not None and head.length > self.max_body:  # 413, not read
                status = await self._refuse(scope, send,
                                            predict[0] if predict is not None else bodied, head,
                                            PayloadTooLarge(self._too_large(head.length)))
            elif predict is not None:
                status = await self._predict(scope, body, send, predict, head)
            elif bodied is not None:
                status = await self._serve(scope, body, send, bodied, head)
            else:
                status = await self._behind(scope, body, send, head)
        finally:
            if self.access_log:
                self._log(scope, head.request_id, status, started)
            request_id_var.reset(token)

    def _match(self, path: str) -> Predict | None:
        """What a predict path asks for; ``None`` for any other path."""
        if not path.startswith(self._prefixes):
            return None
        for pattern, protocol in self._routes:
            match = pattern.match(path)
            if match is not None:
                groups = match.groups()
                return protocol, groups[0], groups[1] if len(groups) > 1 else None
        return None

    async def _refuse(self, scope: Scope, send: Send, protocol: Answering[Any] | None,
                      head: _Head, error: InfernoError) -> int:
        """Answer ``error`` in the protocol's format, or by path where no protocol answers."""
        answer = (protocol.refuse(error) if protocol is not None
                  else error_answer(error, lambda e: http_error(e, scope["path"])))
        await _send(send, answer, head.request_id)
        return answer[0]

    async def _behind(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> int:
        """Let the app behind (FastAPI) answer, with the request id; the status it answered."""
        id_header = (b"x-request-id", head.request_id.encode("latin-1"))
        status = 500
        if head.coding is not None:  # the app reads the body inflated, as a predict does
            try:
                scope, receive = await self._inflated(scope, receive, head.coding)
            except InfernoError as exc:
                return await self._refuse(scope, send, None, head, exc)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
        return status

    async def _inflated(self, scope: Scope, receive: Receive,
                        coding: bytes) -> tuple[Scope, Receive]:
        """The request as the app behind reads it: the body inflated, its headers saying so."""
        body = await self._body(receive, coding)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k, v) for k, v in scope["headers"]
                   if k not in (b"content-encoding", b"content-length")]
        headers.append((b"content-length", str(len(body)).encode()))
        return {**scope, "headers": headers}, replay

    async def _predict(self, scope: Scope, receive: Receive, send: Send, predict: Predict,
                       head: _Head) -> int:
        """Answer a predict through the data plane; the status (``CLIENT_LEFT``: unanswered)."""
        protocol, name, version = predict
        return await self._answer(
            scope, receive, send, head, protocol, name, version,
            lambda body, pinned: self.plane.infer(
                name, pinned, protocol.call(body, scope["headers"]), head.request_id))

    async def _serve(self, scope: Scope, receive: Receive, send: Send,
                     protocol: BodyRoutedProtocol[Any], head: _Head) -> int:
        """Answer a request whose body names its model, through its protocol."""
        return await self._answer(
            scope, receive, send, head, protocol, None, None,
            lambda body, _: protocol.respond(self.plane, body, scope["headers"],
                                             head.request_id))

    async def _answer(self, scope: Scope, receive: Receive, send: Send, head: _Head,
                      protocol: Answering[Any], name: str | None, version: str | None,
                      start: Start) -> int:
        """Check the request (``name``: the path's model, if any), read its body, await what
        ``start`` makes of it and send the protocol's answer or error; the status
        (``CLIENT_LEFT``: unanswered)."""
        try:
            pinned = self._check(scope["method"], name, version, head.authorization)
            work = start(await self._body(receive, head.coding), pinned)
            watch = DisconnectWatch(receive)
            try:
                answer = protocol.answer(await work)
            except asyncio.CancelledError:
                if not watch.absorb():
                    raise
                return CLIENT_LEFT  # nobody to answer
            finally:
                watch.stop()
            if (head.accept is not None and self.compress_min is not None
                    and len(answer[1]) >= self.compress_min):
                answer = _compressed(answer, head.accept)
        except InfernoError as exc:
            answer = protocol.refuse(exc)
        except Exception as exc:
            log.exception("predict %s failed unexpectedly", name or scope["path"])
            answer = protocol.refuse(unexpected_error(exc))
        await _send(send, answer, head.request_id)
        return answer[0]

    async def _body(self, receive: Receive, coding: bytes | None) -> bytes:
        """The request's body, inflated when its ``Content-Encoding`` says it is compressed."""
        body = await _read_body(receive)
        return body if coding is None else inflate(body, coding, self.max_body)

    def _check(self, method: str, name: str | None, version: str | None,
               authorization: bytes | None) -> int | None:
        """The version a predict path pins, once its token, model name (``None``: the body
        names it) and method are checked, before its body is read (as the FastAPI routes check
        theirs)."""
        if self._guard is not None:
            self._guard.check_api(authorization)
        if name is not None and not _MODEL_NAME.match(name):
            raise InvalidInput(f"path.name: {name[:80]!r} is not a model name (letters, "
                               f"digits, '_' and '-', at most 64)")
        if method != "POST":
            raise HttpError(405, "Method Not Allowed", _ALLOW_POST)
        return None if version is None else version_of(version, "path.version")

    def _log(self, scope: Scope, request_id: str, status: int, started: float) -> None:
        access_log.info("%s %s %d", scope["method"], scope["path"], status, extra={
            "request_id": request_id, "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3)})

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


@dataclass(slots=True)
class _Head:
    """What the front reads of a request's headers, in one pass."""

    request_id: str
    length: int | None
    authorization: bytes | None
    coding: bytes | None
    """``Content-Encoding``."""
    accept: bytes | None
    """``Accept-Encoding``."""


def _read_headers(headers: Headers) -> _Head:
    """The request id (the client's when it may be echoed, else a new one), Content-Length,
    Authorization and the content codings, in one pass over the headers."""
    request_id = None
    length = None
    authorization = coding = accept = None
    for key, value in headers:
        if key == b"x-request-id":
            request_id = value
        elif key == b"authorization":
            authorization = value
        elif key == b"content-length":
            length = int(value) if value.isdigit() else None
        elif key == b"content-encoding":
            coding = value
        elif key == b"accept-encoding":
            accept = value
    return _Head(request_id_of(request_id), length, authorization, coding, accept)


def _compressed(answer: Answer, accept: bytes) -> Answer:
    """``answer`` in the coding ``accept`` prefers, if it takes one."""
    coding = accepted_coding(accept)
    if coding is None:
        return answer
    status, body, headers = answer
    return status, compress(body, coding), (*headers, (b"content-encoding", coding),
                                            (b"vary", b"accept-encoding"))


async def _send(send: Send, answer: Answer, request_id: str) -> None:
    status, body, headers = answer
    await send({"type": "http.response.start", "status": status, "headers": [
        *headers, (b"x-request-id", request_id.encode("latin-1")),
        (b"content-length", str(len(body)).encode())]})
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
