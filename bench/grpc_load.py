"""The gRPC load generators: N concurrent clients over one ``grpc.aio`` channel per target, each
client one request at a time, on ``ModelInfer`` (``GrpcLevel``) or each on a ``ModelStreamInfer``
stream of its own (``GrpcStreamLevel``: write a request, read its answer, repeat).

They are ``bench.load``'s level with other clients: the spawned process, the warm-up, the window,
the metrics scrapes over HTTP and the tallies are that module's. Each target's ``request`` is a
serialised ``ModelInferRequest`` (``bench.payload.grpc_infer``), parsed once; the clients share
the message and the channel of their target (HTTP/2 multiplexes them over one connection, so the
generator runs one grpc completion loop, not N sockets). A call counts when its status is OK and
a streamed answer when it has no ``error_message``, as an HTTP request counts when it answers 200;
anything else, a unary deadline past ``GRACE_S`` or a stream the server ended included, is an
error (a failed stream is opened again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench.load import CONNECT_RETRY_S, GRACE_S, Endpoint, Level, LevelSpec, LoadOutcome
from bench.payload import GRPC, GRPC_STREAM

__all__ = ["LEVELS", "READY_TIMEOUT_S", "GrpcLevel", "GrpcStreamLevel"]

READY_TIMEOUT_S = 10.0
"""How long each channel may take to connect before the level fails."""


class _GrpcLevel(Level):
    """What both drivers share: the channels, the messages, the timed loop of one client."""

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
        return [self.grpc_client(stubs[t.host, t.port], messages[t.request]) for t in targets]

    async def grpc_client(self, stub: Any, request: Any) -> None:
        """One client's loop on ``stub`` with ``request``, until the window ends."""
        raise NotImplementedError

    async def timed(self, once: Callable[[], Awaitable[bool]],
                    reset: Callable[[], None] = lambda: None) -> None:
        """Call ``once`` (one request: ``True`` when answered well) until the window ends,
        recording each latency inside it; a failed call is an error, then ``reset``."""
        perf, latencies = time.perf_counter, self.latencies
        window_start, window_end = self.window_start, self.window_end
        while True:
            started = perf()
            if started >= window_end:
                return
            try:
                answered = await once()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # A failed call, or a write on a stream the server has ended.
                self.errors += 1
                await asyncio.sleep(CONNECT_RETRY_S)  # a server gone: do not spin
                reset()
                continue
            finished = perf()
            if not answered:
                self.errors += 1
            elif window_start <= finished <= window_end:
                latencies.append(finished - started)

    async def run(self) -> LoadOutcome:
        try:
            return await super().run()
        finally:
            await asyncio.gather(*(channel.close() for channel in self._channels))


class GrpcLevel(_GrpcLevel):
    """A level whose clients call ``GRPCInferenceService.ModelInfer``."""

    async def grpc_client(self, stub: Any, request: Any) -> None:
        infer = stub.ModelInfer

        async def once() -> bool:
            await infer(request, timeout=GRACE_S)
            return True

        await self.timed(once)


class GrpcStreamLevel(_GrpcLevel):
    """A level whose clients each hold a ``ModelStreamInfer`` stream, one request in flight."""

    async def grpc_client(self, stub: Any, request: Any) -> None:
        stream = stub.ModelStreamInfer()

        async def once() -> bool:
            await stream.write(request)
            answer = await stream.read()
            if answer is grpc.aio.EOF:  # the server ended the stream: a fresh one
                reset()
                return False
            return not answer.error_message

        def reset() -> None:
            nonlocal stream
            stream.cancel()
            stream = stub.ModelStreamInfer()

        try:
            await self.timed(once, reset)
        finally:
            stream.cancel()


LEVELS: dict[str, type[Level]] = {GRPC: GrpcLevel, GRPC_STREAM: GrpcStreamLevel}
"""The driver of each gRPC ``--protocol``."""
