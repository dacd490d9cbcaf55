"""``ModelStatistics`` over gRPC, through Triton's own client (``get_inference_statistics``, its
message and ``as_json``), against the embedded server: the numbers REST answers, as uint64."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import InferenceServerClient

from tests.grpc.conftest import GrpcServed, ServeGrpc, tensor
from tests.v2.test_triton_client import X

pytestmark = pytest.mark.asyncio


async def settled(server: GrpcServed, model: str, requests: int) -> Any:
    """The model's statistics once its versions count ``requests`` answered or failed ones."""
    async with asyncio.timeout(10):
        while True:
            stats = await server.triton(lambda c: c.get_inference_statistics(model))
            if sum(s.inference_stats.success.count + s.inference_stats.fail.count
                   for s in stats.model_stats) >= requests:
                return stats
            await asyncio.sleep(0.02)


async def test_counts_as_a_message_and_as_json(serve_grpc: ServeGrpc) -> None:
    server = await serve_grpc(preload=["mlp", "failing"])
    requests = 4

    def infer(client: InferenceServerClient) -> None:
        for _ in range(requests):
            client.infer("mlp", [tensor("x", X[:1])])

    await server.triton(infer)
    stats = await settled(server, "mlp", requests)
    assert [(s.name, s.version) for s in stats.model_stats] == [("mlp", "1"), ("mlp", "2")]
    never, two = stats.model_stats
    assert (never.inference_count, never.execution_count) == (0, 0)
    assert two.inference_count == requests and 1 <= two.execution_count <= requests
    assert two.inference_stats.success.count == requests
    assert two.inference_stats.success.ns > 0 and two.inference_stats.compute_infer.ns > 0
    assert sum(b.compute_infer.count for b in two.batch_stats) == two.execution_count

    # One version; as_json: protobuf's JSON, where a uint64 is a string.
    one = await server.triton(lambda c: c.get_inference_statistics("mlp", "2", as_json=True))
    [stat] = one["model_stats"]
    assert (stat["name"], stat["version"]) == ("mlp", "2")
    assert stat["inference_count"] == str(requests)
    assert stat["inference_stats"]["success"]["count"] == str(requests)

    # A request the model fails is counted as failed.
    status, message = await server.refused(
        lambda c: c.infer("failing", [tensor("x", -np.ones((1, 3), np.float32))]))
    assert status == "StatusCode.INTERNAL" and "negative input" in message
    failing = (await settled(server, "failing", 1)).model_stats[0]
    assert (failing.inference_stats.fail.count, failing.inference_stats.success.count) == (1, 0)
    assert (failing.inference_count, failing.execution_count) == (0, 0)

    # No name: every version of every model.
    everything = await server.triton(lambda c: c.get_inference_statistics())
    listed = {(s.name, s.version) for s in everything.model_stats}
    assert {("mlp", "1"), ("mlp", "2"), ("failing", "1"), ("bag", "1")} <= listed


async def test_unknown_models_and_bad_versions_are_refused(server: GrpcServed) -> None:
    def stats(model: str, version: str = "") -> Any:
        return lambda c: c.get_inference_statistics(model, version)

    assert await server.refused(stats("nope")) == (
        "StatusCode.NOT_FOUND",
        "Request for unknown model: 'nope' is not found: Model 'nope' not found in the "
        "repository")
    status, message = await server.refused(stats("mlp", "9"))
    assert status == "StatusCode.NOT_FOUND"
    assert message.endswith("Model 'mlp' has no version 9 (versions: 1, 2)")
    status, message = await server.refused(stats("mlp", "two"))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message.startswith("failed to get model version from specified version string "
                              "'two': version: Input should be a valid integer"), message
