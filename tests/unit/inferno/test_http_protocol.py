"""The HTTP protocol ``inferno serve`` and ``inferno facade`` run uvicorn with: a response's head
and body leave in one write. What is tried, over real sockets against a real uvicorn: a plain
response, two on one kept-alive connection, a streamed response whose body is not ready when its
head is sent (the head must not wait for it), and a response that closes the connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from inferno.http_protocol import CoalescingHttpToolsProtocol

sends: list[int] = []
"""Per write reaching a connection's socket transport, the bytes it carried."""
body_ready = asyncio.Event()


class CountedTransport:
    """The real transport, counting what is written to it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        sends.append(len(data))
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        chunks = list(chunks)
        sends.append(sum(len(c) for c in chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Counted(CoalescingHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CountedTransport(transport))  # type: ignore[arg-type]


async def plain(_: Request) -> Response:
    return PlainTextResponse("x" * 1000)


async def streamed(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        await body_ready.wait()
        yield b"late"
    return StreamingResponse(chunks())


async def closing(_: Request) -> Response:
    return PlainTextResponse("bye", headers={"connection": "close"})


@pytest.fixture
async def url() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/plain", plain), Route("/streamed", streamed),
                            Route("/closing", closing)])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # connections wait in its backlog until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(app, http=Counted, lifespan="off", log_config=None,
                                           access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    sends.clear()
    body_ready.clear()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.should_exit = True
    await serving


async def test_a_response_leaves_in_one_write(url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/plain")
    assert response.text == "x" * 1000
    assert len(sends) == 1 and sends[0] > 1000  # head and body together


async def test_each_response_on_a_kept_alive_connection_is_one_write(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(f"{url}/plain")).status_code == 200
    assert len(sends) == 3


async def test_a_head_whose_body_is_not_ready_is_sent_without_waiting_for_it(url: str) -> None:
    async with httpx.AsyncClient() as client, client.stream("GET", f"{url}/streamed") as response:
        assert response.status_code == 200  # the head arrived while the body still waits
        body_ready.set()
        assert await response.aread() == b"late"
    assert len(sends) >= 2


async def test_a_response_that_closes_its_connection_is_sent_whole_first(url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/closing")
    assert (response.text, response.headers["connection"]) == ("bye", "close")
    assert len(sends) == 1
