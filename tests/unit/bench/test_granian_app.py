"""``bench.granian_app.InfernoApp``: the ASGI lifespan starts what it serves, HTTP scopes go to
it, shutdown closes it, and a failed start is told to the server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.granian_app import Close, InfernoApp


class Lifespan:
    """The server's side of the lifespan protocol."""

    def __init__(self) -> None:
        self._to_app = asyncio.Queue[dict[str, Any]]()
        self._from_app = asyncio.Queue[dict[str, Any]]()

    async def receive(self) -> dict[str, Any]:
        return await self._to_app.get()

    async def send(self, message: dict[str, Any]) -> None:
        await self._from_app.put(message)

    async def say(self, kind: str) -> dict[str, Any]:
        """Send ``lifespan.<kind>``; the app's answer."""
        self._to_app.put_nowait({"type": f"lifespan.{kind}"})
        async with asyncio.timeout(5):
            return await self._from_app.get()


class Started:
    """What a start built: an app that records its scopes, and whether it was closed."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.closed = False

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)

    async def close(self) -> None:
        self.closed = True

    async def start(self) -> tuple[ASGIApp, Close]:
        return self.app, self.close


async def test_startup_then_http_then_shutdown() -> None:
    started = Started()
    app, lifespan = InfernoApp(started.start), Lifespan()
    running = asyncio.create_task(app({"type": "lifespan"}, lifespan.receive, lifespan.send))
    assert await lifespan.say("startup") == {"type": "lifespan.startup.complete"}
    await app({"type": "http", "path": "/health/ready"}, lifespan.receive, lifespan.send)
    assert started.scopes == [{"type": "http", "path": "/health/ready"}] and not started.closed
    assert await lifespan.say("shutdown") == {"type": "lifespan.shutdown.complete"}
    await asyncio.wait_for(running, 5)
    assert started.closed


async def test_a_failed_start_is_told_and_nothing_is_served() -> None:
    async def failing() -> tuple[ASGIApp, Close]:
        raise SystemExit("inferno facade needs INFERNO_BROKER_URL")

    app, lifespan = InfernoApp(failing), Lifespan()
    running = asyncio.create_task(app({"type": "lifespan"}, lifespan.receive, lifespan.send))
    assert await lifespan.say("startup") == {
        "type": "lifespan.startup.failed",
        "message": "SystemExit: inferno facade needs INFERNO_BROKER_URL"}
    await asyncio.wait_for(running, 5)  # the lifespan is over: the server exits
    with pytest.raises(RuntimeError, match="not started"):
        await app({"type": "http"}, lifespan.receive, lifespan.send)
