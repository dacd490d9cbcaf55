"""Triton's statistics of a cluster: a facade and two workers over a real RabbitMQ vhost and Redis
prefix (tests/distributed/conftest.py), read with Triton's HTTP and gRPC clients. The facade
sums what the live workers report in their heartbeats; a worker that leaves takes its counts
with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tritonclient.grpc import InferenceServerClient as GrpcClient

from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures
from tests.v2.conftest import Serve, Served
from tests.v2.test_statistics import check_consistent, one_row_infers, settled
from worker.reconciler import Reconciler

pytestmark = pytest.mark.asyncio


def counted_by(worker: Reconciler) -> int:
    """Rows of mlp version 2 this worker answered, by its own counters."""
    return worker.statistics.counters("mlp", 2).statistics.inference_count


async def test_two_workers_counts_are_summed_and_leave_with_a_worker(
        running: Cluster, serve: Serve) -> None:  # noqa: F811 - running
    first, _ = await running.worker(preload=["mlp"])
    second, _ = await running.worker(preload=["mlp"])
    facade, _ = await running.facade()
    await wait_ready(facade)
    assert await facade.view.wait_for(lambda: True if facade.view.serving("mlp", 2) == 2
                                      else None, 30), "both workers serve mlp 2"
    server: Served = await serve(facade.app)
    grpc_url = f"127.0.0.1:{await facade.grpc.start(0)}"
    requests = 8
    await one_row_infers(server, requests)
    stat = await settled(server, "mlp", "2", requests)
    assert stat["inference_count"] == requests
    assert stat["inference_stats"]["success"]["count"] == requests
    assert 1 <= stat["execution_count"] <= requests
    check_consistent(stat)
    # The sum of what each worker counted: RabbitMQ hands one request after another to its
    # consumers in turn, so both counted some.
    assert counted_by(first) + counted_by(second) == requests
    assert counted_by(first) and counted_by(second)

    def grpc_stats(**options: Any) -> Any:
        with GrpcClient(grpc_url) as client:
            return client.get_inference_statistics("mlp", "2", **options)

    message = await asyncio.to_thread(grpc_stats)
    assert message.model_stats[0].inference_count == requests
    as_json = await asyncio.to_thread(grpc_stats, as_json=True)
    assert as_json["model_stats"][0]["inference_stats"]["success"]["count"] == str(requests)

    # A worker that stops leaves the cluster, and its counts leave the sum.
    kept = counted_by(first)
    await second.stop()
    after = await server.triton(lambda c: c.get_inference_statistics("mlp", "2"))
    assert after["model_stats"][0]["inference_count"] == kept
