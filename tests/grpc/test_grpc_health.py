"""gRPC's standard health service (``grpc.health.v1``) on a facade of a cluster (a real RabbitMQ
vhost and Redis prefix): readiness follows the workers as ``/health/ready`` does, liveness does
not, an unknown service is ``NOT_FOUND`` (``Check``) or ``SERVICE_UNKNOWN`` (``Watch``)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2 as pb
from grpc_health.v1 import health_pb2_grpc

from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures

pytestmark = pytest.mark.asyncio

SERVING, NOT_SERVING = pb.HealthCheckResponse.SERVING, pb.HealthCheckResponse.NOT_SERVING


async def test_readiness_follows_the_workers_and_liveness_does_not(
        running: Cluster) -> None:  # noqa: F811 - running
    worker, _ = await running.worker(preload=["mlp"])
    facade, http = await running.facade()
    await wait_ready(facade)
    url = f"127.0.0.1:{await facade.grpc.start(0)}"
    async with grpc.aio.insecure_channel(url) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def check(service: str) -> int:
            answer = await health.Check(pb.HealthCheckRequest(service=service), timeout=10)
            return int(answer.status)

        for service in ("", "inference.GRPCInferenceService", "live"):
            assert await check(service) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await check("nope")
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        assert "unknown service 'nope'" in (unknown.value.details() or "")
        unknown_watch = health.Watch(pb.HealthCheckRequest(service="nope"), timeout=10)
        assert (await unknown_watch.read()).status == pb.HealthCheckResponse.SERVICE_UNKNOWN
        unknown_watch.cancel()

        # The only worker leaves: the active mlp has no worker, the facade is not ready.
        watch = health.Watch(pb.HealthCheckRequest(service=""), timeout=30)
        assert (await watch.read()).status == SERVING
        await worker.stop()
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()
        assert await check("") == NOT_SERVING
        assert (await http.get("/health/ready")).status_code == 503
        assert await check("live") == SERVING
