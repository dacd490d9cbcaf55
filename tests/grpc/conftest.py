"""Inferno's gRPC server for Triton's own gRPC clients (``tritonclient[grpc]``).

The embedded server (facade + worker in process) runs in the test's event loop with its gRPC
server on a free port (the kernel's pick: nothing else binds 8001). The synchronous client runs
in a thread (``asyncio.to_thread``) so that the loop keeps serving while it waits; the aio client
and the raw stub run in the loop itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import InferenceServerClient, InferInput, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from inferno.embedded import Embedded
from tests.integration.conftest import Start, repo, start_server  # noqa: F401 - fixtures

T = TypeVar("T")

MODELS = ["mlp", "bag", "strings", "slow"]


@dataclass
class GrpcServed:
    """One embedded server: its gRPC address and, for admin calls, its HTTP API in process."""

    url: str
    """``host:port``, as tritonclient takes it."""
    http: httpx.AsyncClient
    embedded: Embedded

    async def triton(self, call: Callable[[InferenceServerClient], T], **client: Any) -> T:
        """``call(client)`` with a fresh synchronous client, in a thread of its own."""
        def run() -> T:
            with InferenceServerClient(self.url, **client) as triton:
                return call(triton)

        return await asyncio.to_thread(run)

    async def refused(self, call: Callable[[InferenceServerClient], Any],
                      **client: Any) -> tuple[str, str]:
        """The (gRPC status name, message) of the error that ``call`` must raise."""
        with pytest.raises(InferenceServerException) as raised:
            await self.triton(call, **client)
        return str(raised.value.status()), raised.value.message()


ServeGrpc = Callable[..., Any]


@pytest.fixture
async def serve_grpc(start_server: Start) -> ServeGrpc:  # noqa: F811 - the fixture
    """``await serve_grpc(preload=[...], **facade_settings)`` → an embedded server with gRPC."""
    async def start(preload: list[str] | None = None, **settings: Any) -> GrpcServed:
        embedded, http = await start_server(preload=MODELS if preload is None else preload,
                                            **settings)
        port = await embedded.facade.grpc.start(0)
        return GrpcServed(f"127.0.0.1:{port}", http, embedded)

    return start


@pytest.fixture
async def server(serve_grpc: ServeGrpc) -> GrpcServed:
    served: GrpcServed = await serve_grpc()
    return served


@pytest.fixture
async def stub(server: GrpcServed) -> AsyncIterator[Any]:
    """The generated stub on a channel of its own: for requests tritonclient will not build."""
    async with grpc.aio.insecure_channel(server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def tensor(name: str, array: np.ndarray[Any, Any]) -> InferInput:
    """An InferInput holding ``array`` (its datatype from the numpy dtype)."""
    data = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    return data.set_data_from_numpy(array)
