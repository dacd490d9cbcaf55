"""The floor of gRPC serving: a bare ``grpc.aio`` server of Triton's ``GRPCInferenceService`` with
no model, no data plane and no Inferno behind it.

``GrpcFloor`` spawns one process on uvloop (as the facade runs) that answers ``ModelInfer`` with a
fixed ``ModelInferResponse`` (``bench.payload.grpc_response``: the model's outputs at the run's
rows, raw) and each ``ModelStreamInfer`` request with the same inside a
``ModelStreamInferResponse``; grpc parses every request and serialises every answer, as it does
for the facade. Driven by the same clients as Inferno (``bench.grpc_load``), its req/s and CPU
per call (read from ``/proc/<pid>/stat``: it has no metrics) are what grpcio alone allows on the
machine; ``--compare-protocols`` measures it after the Inferno runs, so they never compete.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench.load import run_async
from bench.server import Started

__all__ = ["READY_TIMEOUT_S", "GrpcFloor"]

READY_TIMEOUT_S = 30.0
"""How long the spawned process may take to import grpc and bind its port."""


async def _serve(host: str, response: bytes, ready: Connection) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    answer = pb.ModelInferResponse.FromString(response)
    streamed = pb.ModelStreamInferResponse(infer_response=answer)

    class Echo(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return answer

        async def ModelStreamInfer(self, requests: AsyncIterator[Any],
                                   context: Any) -> AsyncIterator[Any]:
            async for _ in requests:
                yield streamed

    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    ready.send(port)
    ready.close()
    await server.wait_for_termination()


def _child(host: str, response: bytes, ready: Connection) -> None:
    """Body of the spawned process: serve until terminated."""
    with contextlib.suppress(KeyboardInterrupt):
        run_async(_serve(host, response, ready))


class GrpcFloor(Started):
    """The bare echo server in its own process; a context manager that always stops it."""

    def __init__(self, response: bytes, host: str = "127.0.0.1") -> None:
        self.response = response
        self.host = host
        self.port = 0
        self._process: BaseProcess | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None or self._process.pid is None:
            raise RuntimeError("the gRPC floor is not running")
        return self._process.pid

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_child, args=(self.host, self.response, sender),
                                        name="bench-grpc-floor", daemon=True)
        self._process.start()
        sender.close()
        try:
            if not receiver.poll(READY_TIMEOUT_S):
                raise RuntimeError("the gRPC floor did not start in time")
            self.port = receiver.recv()
        except EOFError:
            raise RuntimeError(f"the gRPC floor exited with code {self._process.exitcode}"
                               ) from None
        finally:
            receiver.close()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()  # it holds nothing worth a graceful stop
            process.join(5.0)
            process.close()
