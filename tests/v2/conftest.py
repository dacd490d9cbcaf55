"""Inferno on a real port, for Triton's own HTTP client (``tritonclient[http]``).

tritonclient speaks HTTP through geventhttpclient, so the facade's ASGI app runs under uvicorn on
127.0.0.1 inside the test's event loop, and the synchronous client runs in a thread
(``asyncio.to_thread``) so that the loop keeps serving while the client waits. Each call gets a
fresh client made in the thread that uses it: a gevent hub belongs to one thread.

``server`` is the embedded server (facade + worker in process) with the models the core checks
use; ``serve_embedded`` starts one with other models or settings; ``serve`` puts any facade app
on a port (the distributed tests pass the cluster facade's app).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.types import ASGIApp
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from inferno.embedded import Embedded
from tests.integration.conftest import Start, repo, start_server  # noqa: F401 - fixtures

T = TypeVar("T")

CORE_MODELS = ["mlp", "bag", "echo16"]
"""What the core checks need loaded (mlp v2, the active one; v1 stays unloaded)."""


@dataclass
class Served:
    """One facade behind uvicorn: tritonclient and raw HTTP against the same port."""

    url: str
    """``host:port``, the way tritonclient takes it (no scheme)."""
    http: httpx.AsyncClient
    embedded: Embedded | None = None
    """The embedded server behind the port, when there is one (None: a cluster's facade)."""

    async def triton(self, call: Callable[[InferenceServerClient], T], *,
                     concurrency: int = 1) -> T:
        """``call(client)`` with a fresh tritonclient, in a thread of its own."""
        def run() -> T:
            client = InferenceServerClient(self.url, concurrency=concurrency,
                                           connection_timeout=10, network_timeout=30)
            try:
                return call(client)
            finally:
                client.close()

        return await asyncio.to_thread(run)

    async def refused(self, call: Callable[[InferenceServerClient], Any]) -> tuple[int, str]:
        """The (status, message) of the InferenceServerException that ``call`` must raise."""
        with pytest.raises(InferenceServerException) as raised:
            await self.triton(call)
        status = raised.value.status()
        assert status is not None, f"no HTTP status: {raised.value}"
        return int(status), raised.value.message()


Serve = Callable[[ASGIApp], Awaitable[Served]]
ServeEmbedded = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(app)`` → the app listening on 127.0.0.1 (a free port), stopped afterwards."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start(app: ASGIApp) -> Served:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                                               log_config=None, access_log=False))
        task = asyncio.create_task(server.serve())
        # uvicorn has no event for "listening": poll its flag, bounded.
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # a failed start-up raises here
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        running.append((server, task, http))
        return Served(f"127.0.0.1:{port}", http)

    yield start
    for server, task, http in reversed(running):
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def serve_embedded(start_server: Start, serve: Serve) -> ServeEmbedded:  # noqa: F811 - the fixture
    """``await serve_embedded(preload=[...], **facade_settings)`` → an embedded server on a port."""
    async def start(preload: list[str] | None = None, **settings: Any) -> Served:
        embedded, _ = await start_server(preload=CORE_MODELS if preload is None else preload,
                                         **settings)
        served = await serve(embedded.facade.app)
        served.embedded = embedded
        return served

    return start


@pytest.fixture
async def server(serve_embedded: ServeEmbedded) -> Served:
    return await serve_embedded()


def tensor(name: str, array: np.ndarray[Any, Any], binary: bool = True) -> InferInput:
    """An InferInput holding ``array`` (its datatype from the numpy dtype)."""
    data = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    return data.set_data_from_numpy(array, binary_data=binary)


def wanted(*names: str, binary: bool = True) -> list[InferRequestedOutput]:
    return [InferRequestedOutput(n, binary_data=binary) for n in names]


BAD_VERSION = "failed to get model version from specified version string "
"""Triton's phrase for a version that is not one, which v2 messages start with."""


def unknown(model: str, message: str) -> str:
    """What a v2 client reads of a 404 for ``model``: Triton's phrase, then Inferno's message."""
    return f"Request for unknown model: '{model}' is not found: {message}"
