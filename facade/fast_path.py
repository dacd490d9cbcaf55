"""Predict requests served in pure ASGI, ahead of FastAPI's routing.

FastAPI's per-request machinery (middleware layers, route scan, dependency solving) costs more than
the whole rest of a predict call; measured here, a null FastAPI route tops out at a third of a raw
ASGI handler. So ``POST /v1/models/{name}[/versions/{v}]:predict`` is matched here with one regex
and answered directly; the same ``V1Predict`` adapter backs the documented FastAPI routes, and every
other path goes on to FastAPI.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import InfernoError
from facade.errors import error_body
from facade.v1_predict import V1Predict

__all__ = ["PredictFastPath"]

_V1 = re.compile(r"^/v1/models/([^/]+?)(?:/versions/([1-9][0-9]{0,9}))?:predict$")
_JSON = (b"content-type", b"application/json")


class PredictFastPath:
    def __init__(self, app: ASGIApp, v1: V1Predict) -> None:
        self.app = app
        self.v1 = v1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _V1.match(scope["path"])
            if match is not None:
                await self._predict(match, receive, send)
                return
        await self.app(scope, receive, send)

    async def _predict(self, match: re.Match[str], receive: Receive, send: Send) -> None:
        name, version = match.group(1), match.group(2)
        try:
            body = await _read_body(receive)
            status, payload = 200, await self.v1(
                name, int(version) if version else None, body)
        except InfernoError as exc:
            status, payload = exc.status_code, error_body(exc.code, exc.message)
        await send({"type": "http.response.start", "status": status, "headers": [
            _JSON, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


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
