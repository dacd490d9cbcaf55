"""gRPC's standard health service (``grpc.health.v1.Health``) on the facade's gRPC port: what
Kubernetes' ``grpc`` probes, grpc-health-probe and load balancers call.

A service name says which check: ``""`` (the whole server, as the protocol defines it) and
``inference.GRPCInferenceService`` are readiness, ``SERVING`` exactly when ``ServerReady`` and
``/health/ready`` say ready (``ClusterView.ready``); ``live`` is liveness, ``SERVING`` whenever
the process answers (``/health/live``). Any other name is ``NOT_FOUND`` on ``Check`` and
``SERVICE_UNKNOWN`` on ``Watch``, as the protocol says. ``Watch`` sends the status at once, then
each change, from the view's change events. Health is open: no token, as over REST.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2 as pb

from facade.cluster_view import ClusterView

__all__ = ["LIVE", "HealthServicer"]

LIVE = "live"
"""The service name of the liveness check."""
INFERENCE = "inference.GRPCInferenceService"
WATCH_CHECK_S = 60.0
"""How long a ``Watch`` waits on the view's changes before it looks again regardless."""
SERVING: int = pb.HealthCheckResponse.SERVING
NOT_SERVING: int = pb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = pb.HealthCheckResponse.SERVICE_UNKNOWN
Context = Any
"""A ``grpc.aio.ServicerContext`` (grpc ships no type hints)."""


class HealthServicer:
    """``grpc.health.v1.Health``: ``Check`` and ``Watch`` (grpc looks each up by name)."""

    def __init__(self, view: ClusterView) -> None:
        self._view = view

    async def Check(self, request: Any, context: Context) -> Any:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown service '{request.service}': Inferno's health checks "
                                f"are '', '{INFERENCE}' (ready) and '{LIVE}'")
        return pb.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: Context) -> AsyncIterator[Any]:
        def now() -> int:
            status = self._status(request.service)
            return SERVICE_UNKNOWN if status is None else status

        def changed() -> int | None:
            status = now()
            return status if status != last else None

        last = now()
        yield pb.HealthCheckResponse(status=last)
        while True:
            status = await self._view.wait_for(changed, WATCH_CHECK_S)
            if status is not None:
                last = status
                yield pb.HealthCheckResponse(status=last)

    def _status(self, service: str) -> int | None:
        """The ``ServingStatus`` of ``service``; ``None`` for a name Inferno has no check of."""
        if service == LIVE:
            return SERVING
        if service in ("", INFERENCE):
            return SERVING if self._view.ready()[0] else NOT_SERVING
        return None
