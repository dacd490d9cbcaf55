"""The gRPC load generator: N concurrent ``ModelInfer`` calls over one ``grpc.aio`` channel per
target, each client one call at a time.

It is ``bench.load``'s level with other clients: the spawned process, the warm-up, the window,
the metrics scrapes over HTTP and the tallies are that module's. Each target's ``request`` is a
serialised ``ModelInferRequest`` (``bench.payload.grpc_infer``), parsed once; the clients share
the message and the channel of their target (HTTP/2 multiplexes them over one connection, so the
generator runs one grpc completion loop, not N sockets). A call counts when its status is OK,
as an HTTP request counts when it answers 200; any other status, a deadline past ``GRACE_S``
included, is an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench.load import CONNECT_RETRY_S, GRACE_S, Endpoint, Level, LevelSpec, LoadOutcome

__all__ = ["READY_TIMEOUT_S", "GrpcLevel"]

READY_TIMEOUT_S = 10.0
"""How long each channel may take to connect before the level fails."""


class GrpcLevel(Level):
    """A level whose clients call ``GRPCInferenceService.ModelInfer``."""

    def __init__(self, spec: LevelSpec) -> None:
        super().__init__(spec)
        self._channels: list[grpc.aio.Channel] = []

    async def start_clients(self, targets: list[Endpoint]) -> list[Coroutine[Any, Any, None]]:
        channels: dict[tuple[str, int], grpc.aio.Channel] = {}
        for target in targets:
            if (target.host, target.port) not in channels:
                channel = grpc.aio.insecure_channel(f"{target.host}:{target.port}")
                await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
                channels[target.host, target.port] = channel
        self._channels = list(channels.values())
        stubs = {key: service_pb2_grpc.GRPCInferenceServiceStub(channel)
                 for key, channel in channels.items()}
        messages = {t.request: pb.ModelInferRequest.FromString(t.request) for t in targets}
        return [self.grpc_client(stubs[t.host, t.port].ModelInfer, messages[t.request])
                for t in targets]

    async def grpc_client(self, infer: Any, request: Any) -> None:
        perf, latencies = time.perf_counter, self.latencies
        window_start, window_end = self.window_start, self.window_end
        while True:
            started = perf()
            if started >= window_end:
                return
            try:
                await infer(request, timeout=GRACE_S)
            except grpc.aio.AioRpcError:
                self.errors += 1
                await asyncio.sleep(CONNECT_RETRY_S)  # a server gone: do not spin
                continue
            finished = perf()
            if window_start <= finished <= window_end:
                latencies.append(finished - started)

    async def run(self) -> LoadOutcome:
        try:
            return await super().run()
        finally:
            await asyncio.gather(*(channel.close() for channel in self._channels))
