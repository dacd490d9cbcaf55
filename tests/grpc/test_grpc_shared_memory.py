"""Triton's system shared memory extension over gRPC, through tritonclient.grpc and
tritonclient.utils.shared_memory: inputs and outputs in regions beside raw ones, the
SystemSharedMemory RPCs, their tokens, every refusal, and the extension off."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput

from tests.grpc.conftest import GrpcServed, ServeGrpc, tensor
from tests.shared_memory import Regions, regions_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.asyncio

ADMIN = "shm-admin-token"
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}
TOKENS = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
MASK = np.array([[True, True, False], [True, True, True]])
OFF = "System shared memory is off: set INFERNO_SHARED_MEMORY=system to turn it on"


@pytest.fixture
async def served(serve_grpc: ServeGrpc) -> GrpcServed:
    started: GrpcServed = await serve_grpc(preload=["bag"], shared_memory="system",
                                           admin_token=ADMIN)
    return started


def bag_in_regions(client: InferenceServerClient, tokens_size: int = TOKENS.nbytes,
                   sum_size: int = 16) -> Any:
    """bag with ``tokens`` from region 'in' and ``mask`` raw; ``sum`` into region 'out' at 8,
    ``count`` and ``mean`` in the response."""
    tokens = InferInput("tokens", list(TOKENS.shape), "INT64").set_shared_memory(
        "in", tokens_size)
    total = InferRequestedOutput("sum")
    total.set_shared_memory("out", sum_size, offset=8)
    return client.infer("bag", [tokens, tensor("mask", MASK)], outputs=[
        InferRequestedOutput("count"), total, InferRequestedOutput("mean")])


async def register(served: GrpcServed, name: str, key: str, byte_size: int) -> None:
    await served.triton(lambda c: c.register_system_shared_memory(name, key, byte_size,
                                                                  headers=AS_ADMIN))


async def test_regions_beside_raw_tensors(served: GrpcServed, regions: Regions) -> None:
    key_in, handle_in = regions.create("in", TOKENS.nbytes)
    key_out, handle_out = regions.create("out", 64)
    shm.set_shared_memory_region(handle_in, [TOKENS])
    await register(served, "in", key_in, TOKENS.nbytes)
    await register(served, "out", key_out, 64)
    result = await served.triton(bag_in_regions)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle_out, np.int64, [2], 8),
                                  [3, 15])
    # The outputs around the one in shared memory read as usual (raw contents by position).
    assert result.as_numpy("count").tolist() == [2, 3]
    assert result.as_numpy("mean").tolist() == [1.5, 5.0]
    placed = result.get_output("sum").parameters  # (its as_json returns nothing)
    assert (set(placed), placed["shared_memory_region"].string_param,
            placed["shared_memory_byte_size"].int64_param) == (
        {"shared_memory_region", "shared_memory_byte_size"}, "out", 16)
    status = await served.triton(lambda c: c.get_system_shared_memory_status(as_json=True))
    assert status == {"regions": {
        "in": {"name": "in", "key": key_in, "byte_size": str(TOKENS.nbytes)},
        "out": {"name": "out", "key": key_out, "byte_size": "64"}}}
    metadata = await served.triton(lambda c: c.get_server_metadata(as_json=True))
    assert "system_shared_memory" in metadata["extensions"]
    await served.triton(lambda c: c.unregister_system_shared_memory("in", headers=AS_ADMIN))
    one = await served.triton(lambda c: c.get_system_shared_memory_status("out"))
    assert list(one.regions) == ["out"]
    await served.triton(lambda c: c.unregister_system_shared_memory(headers=AS_ADMIN))
    assert not (await served.triton(lambda c: c.get_system_shared_memory_status())).regions


async def test_refusals_name_what_is_wrong(served: GrpcServed, regions: Regions) -> None:
    key_in, _ = regions.create("in", TOKENS.nbytes)
    key_out, handle_out = regions.create("out", 64)
    shm.set_shared_memory_region(handle_out, [np.full(64, 0xEE, np.uint8)])
    assert await served.refused(bag_in_regions) == (
        "StatusCode.INVALID_ARGUMENT", "Input 'tokens': Unable to find shared memory region: 'in'")
    await register(served, "in", key_in, TOKENS.nbytes)
    await register(served, "out", key_out, 24)  # of 64 bytes
    for call, status, says in [
        (lambda c: c.register_system_shared_memory("in", key_out, 8, headers=AS_ADMIN),
         "INVALID_ARGUMENT", "shared memory region 'in' already in manager"),
        (lambda c: c.register_system_shared_memory("x", "/../x", 8, headers=AS_ADMIN),
         "INVALID_ARGUMENT", "is not a POSIX shared memory name"),
        (lambda c: c.register_system_shared_memory("x", key_in, 8, 48, headers=AS_ADMIN),
         "INVALID_ARGUMENT", "reach past its end"),
        (lambda c: c.register_system_shared_memory("x", key_in, 8), "UNAUTHENTICATED",
         "Missing bearer token: admin calls need INFERNO_ADMIN_TOKEN"),
        (lambda c: c.unregister_system_shared_memory(), "UNAUTHENTICATED", "Missing bearer"),
        (lambda c: c.get_system_shared_memory_status("nope"), "NOT_FOUND",
         "Unable to find system shared memory region: 'nope'"),
        (lambda c: bag_in_regions(c, tokens_size=TOKENS.nbytes + 8), "INVALID_ARGUMENT",
         f"Input 'tokens': offset 0 and byte size {TOKENS.nbytes + 8} reach past the end"),
        (lambda c: bag_in_regions(c, tokens_size=TOKENS.nbytes - 8), "INVALID_ARGUMENT",
         f"needs {TOKENS.nbytes} bytes, got {TOKENS.nbytes - 8}"),
        (lambda c: bag_in_regions(c, sum_size=17), "INVALID_ARGUMENT",
         "Output 'sum': offset 8 and byte size 17 reach past the end"),
        (lambda c: bag_in_regions(c, sum_size=8), "INVALID_ARGUMENT",
         "output 'sum' (8 bytes) should be at least 16 bytes to hold the results"),
        (lambda c: c.get_cuda_shared_memory_status(), "UNIMPLEMENTED",
         "Inferno does not serve CUDA shared memory"),
    ]:
        code, message = await served.refused(call)
        assert (code, says in message) == (f"StatusCode.{status}", True), message
    assert (shm.get_contents_as_numpy(handle_out, np.uint8, [64]) == 0xEE).all()
    left = await served.triton(lambda c: c.get_system_shared_memory_status())
    assert sorted(left.regions) == ["in", "out"]  # a map: in no particular order


async def test_off_every_rpc_and_parameter_says_how_to_turn_it_on(
        server: GrpcServed, regions: Regions) -> None:
    key, _ = regions.create("in", 8)
    for call in [lambda c: c.register_system_shared_memory("in", key, 8),
                 lambda c: c.get_system_shared_memory_status(),
                 lambda c: c.unregister_system_shared_memory(), bag_in_regions]:
        code, message = await server.refused(call)
        assert (code, OFF in message) == ("StatusCode.INVALID_ARGUMENT", True), message
    metadata = await server.triton(lambda c: c.get_server_metadata(as_json=True))
    assert "system_shared_memory" not in metadata["extensions"]
