"""The streaming gRPC driver against a scripted in-process ``grpc.aio`` server: an answer with
``error_message`` is an error, a stream the server ends is an error and the client goes on on a
fresh stream, every other answer a timed request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench.grpc_load import GrpcLevel, GrpcStreamLevel
from bench.load import Endpoint, LevelSpec
from bench.payload import ModelInfo, TensorInfo, grpc_infer

MODEL = ModelInfo("pair", 1, (TensorInfo("x", "float32", ("batch", 4)),), 8)
OK = pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(model_name="pair"))


class Scripted(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The first stream answers once, fails the second request, then ends; later streams and
    unary calls answer every request."""

    def __init__(self) -> None:
        self.streams = 0

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return OK.infer_response

    async def ModelStreamInfer(self, requests: AsyncIterator[Any],
                               context: Any) -> AsyncIterator[Any]:
        self.streams += 1
        script = ([OK, pb.ModelStreamInferResponse(error_message="no such tensor"), None]
                  if self.streams == 1 else [])
        async for _ in requests:
            answer = script.pop(0) if script else OK
            if answer is None:
                return
            yield answer


def _spec(port: int) -> LevelSpec:
    return LevelSpec(targets=(Endpoint("127.0.0.1", port, grpc_infer(MODEL, 1, 0)),),
                     concurrency=1, warmup_s=0.05, duration_s=0.2, model="pair", scrapes=())


async def test_stream_errors_and_ended_streams_count_as_errors() -> None:
    servicer = Scripted()
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        stream = await GrpcStreamLevel(_spec(port)).run()
        unary = await GrpcLevel(_spec(port)).run()
    finally:
        await server.stop(None)
    assert stream.errors == 2  # the error_message answer, and the stream that ended
    assert servicer.streams == 2 and stream.requests > 0 and stream.p50_s is not None
    assert unary.errors == 0 and unary.requests > 0
    assert stream.server_cpu_s is None  # no pids to read
