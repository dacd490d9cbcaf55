"""gRPC against a cluster: a facade and a worker that talk only through a real RabbitMQ vhost
and Redis prefix (tests/distributed/conftest.py); the tensors cross the queue hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tritonclient.grpc import InferenceServerClient
from tritonclient.grpc.aio import InferenceServerClient as AioClient

from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures
from tests.grpc.conftest import tensor
from tests.grpc.test_triton_grpc import MLP_OUTPUTS, assert_mlp
from tests.v2.test_triton_client import X

pytestmark = pytest.mark.asyncio


async def test_infer_and_stream_through_the_broker(running: Cluster) -> None:  # noqa: F811
    await running.worker(preload=["mlp"])
    facade, _ = await running.facade()
    await wait_ready(facade)
    url = f"127.0.0.1:{await facade.grpc.start(0)}"

    def ready() -> bool:
        with InferenceServerClient(url) as client:
            return bool(client.is_server_ready() and client.is_model_ready("mlp"))

    assert await asyncio.to_thread(ready)
    async with AioClient(url) as client:
        assert_mlp(await client.infer("mlp", [tensor("x", X)]), 2, MLP_OUTPUTS)

        async def requests() -> AsyncIterator[dict[str, Any]]:
            for index in range(2):
                yield {"model_name": "mlp", "inputs": [tensor("x", X)], "request_id": str(index)}

        answers = [answer async for answer in client.stream_infer(requests())]
    assert sorted(result.get_response().id for result, _ in answers) == ["0", "1"]
    for result, error in answers:
        assert error is None
        assert_mlp(result, 2, MLP_OUTPUTS)
