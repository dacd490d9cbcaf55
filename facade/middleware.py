"""Pure-ASGI middleware (no BaseHTTPMiddleware: it costs a task and breaks streaming).

``RequestContext``: request id (``x-request-id`` in, or a new one; echoed back), the body size
limit (413 from Content-Length before reading, or while reading a chunked body), and one access
log line per request when enabled.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import PayloadTooLarge
from common.logging import request_id_var
from facade.errors import error_response

__all__ = ["RequestContext"]

access_log = logging.getLogger("inferno.access")

# Request ids: a random per-process prefix and a counter. uuid4() reads os.urandom, a syscall
# that drops the GIL on every request and then waits to get it back from the model thread.
_ID_PREFIX = os.urandom(6).hex()
_ids = itertools.count(1)


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int, access_log: bool) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
        request_id = request_id or f"{_ID_PREFIX}-{next(_ids):x}"
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if length is not None and length > self.max_body:
                await error_response(413, PayloadTooLarge.code, self._too_large(length))(
                    scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            if self.access_log:
                access_log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                    "status": status,
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
