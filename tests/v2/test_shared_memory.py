"""Triton's system shared memory extension over REST, through tritonclient.http and
tritonclient.utils.shared_memory as a client on the facade's host uses them: an embedded server
with ``INFERNO_SHARED_MEMORY=system`` and both tokens, one with the extension off, and a cluster
(the facade reads the region; the worker sees only the tensor bytes, through RabbitMQ)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import serialize_byte_tensor, serialized_byte_size

from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures
from tests.shared_memory import Regions, regions_fixture  # noqa: F401 - the fixture
from tests.v2.conftest import Serve, Served, ServeEmbedded
from tests.v2.test_triton_client import X, mlp_reference

pytestmark = pytest.mark.asyncio

API, ADMIN = "shm-api-token", "shm-admin-token"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_API = {"Authorization": f"Bearer {API}"}
PROBS, LABEL = mlp_reference(2)["probs"], mlp_reference(2)["label"]
OFF = "System shared memory is off: set INFERNO_SHARED_MEMORY=system to turn it on"


@pytest.fixture
async def served(serve_embedded: ServeEmbedded) -> Served:
    return await serve_embedded(preload=["mlp", "strings"], shared_memory="system",
                                api_token=API, admin_token=ADMIN)


def mlp_in_regions(client: InferenceServerClient, output_size: int = PROBS.nbytes) -> Any:
    """The mlp on X from region 'in', probs into region 'out' (at 0), label into 'out' at 128,
    logits in the response."""
    x = InferInput("x", list(X.shape), "FP32").set_shared_memory("in", X.nbytes)
    probs = InferRequestedOutput("probs")
    probs.set_shared_memory("out", output_size)
    label = InferRequestedOutput("label")
    label.set_shared_memory("out", LABEL.nbytes, offset=128)
    return client.infer("mlp", [x], outputs=[probs, label, InferRequestedOutput("logits")],
                        headers=AS_API)


async def register(served: Served, name: str, key: str, byte_size: int, offset: int = 0) -> None:
    await served.triton(lambda c: c.register_system_shared_memory(
        name, key, byte_size, offset, headers=AS_ADMIN))


async def mlp_through_regions(served: Served, regions: Regions) -> tuple[Any, str, str]:
    """``mlp_in_regions`` once regions 'in' (holding X) and 'out' (256 bytes) are registered,
    with the outputs it wrote checked: its result and the two keys."""
    key_in, handle_in = regions.create("in", X.nbytes)
    key_out, handle_out = regions.create("out", 256)
    shm.set_shared_memory_region(handle_in, [X])
    await register(served, "in", key_in, X.nbytes)
    await register(served, "out", key_out, 256)
    result = await served.triton(mlp_in_regions)
    np.testing.assert_allclose(shm.get_contents_as_numpy(handle_out, np.float32, [3, 10]),
                               PROBS, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(handle_out, np.int64, [3], offset=128), LABEL)
    np.testing.assert_allclose(result.as_numpy("logits"), mlp_reference(2)["logits"],
                               rtol=1e-5, atol=1e-7)
    return result, key_in, key_out


async def test_inputs_and_outputs_through_regions(served: Served, regions: Regions) -> None:
    result, key_in, key_out = await mlp_through_regions(served, regions)
    # Outputs in a region are answered with its parameters and no data; the others as usual.
    assert result.get_output("probs") == {
        "name": "probs", "datatype": "FP32", "shape": [3, 10],
        "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": PROBS.nbytes}}
    assert result.get_output("label")["parameters"] == {
        "shared_memory_region": "out", "shared_memory_byte_size": LABEL.nbytes}
    # The status of every region, of one; then they go, one and then all.
    regions_in = {"name": "in", "key": key_in, "offset": 0, "byte_size": X.nbytes}
    regions_out = {"name": "out", "key": key_out, "offset": 0, "byte_size": 256}
    assert await served.triton(lambda c: c.get_system_shared_memory_status(
        headers=AS_API)) == [regions_in, regions_out]
    assert await served.triton(lambda c: c.get_system_shared_memory_status(
        "out", headers=AS_API)) == [regions_out]
    metadata = await served.triton(lambda c: c.get_server_metadata(headers=AS_API))
    assert "system_shared_memory" in metadata["extensions"]
    await served.triton(lambda c: c.unregister_system_shared_memory("in", headers=AS_ADMIN))
    assert await served.triton(lambda c: c.get_system_shared_memory_status(
        headers=AS_API)) == [regions_out]
    await served.triton(lambda c: c.unregister_system_shared_memory(headers=AS_ADMIN))
    assert await served.triton(lambda c: c.get_system_shared_memory_status(
        headers=AS_API)) == []


async def test_strings_through_regions(served: Served, regions: Regions) -> None:
    text = serialize_byte_tensor(np.array(["héllo", "wörld"], dtype=object))
    size = serialized_byte_size(text)
    key_in, handle_in = regions.create("text", size)
    key_out, handle_out = regions.create("upper", 64)
    shm.set_shared_memory_region(handle_in, [text])
    await register(served, "text", key_in, size)
    await register(served, "upper", key_out, 64)

    def infer(client: InferenceServerClient) -> Any:
        upper = InferRequestedOutput("upper")
        upper.set_shared_memory("upper", 64)
        return client.infer("strings", [InferInput("text", [2], "BYTES").set_shared_memory(
            "text", size)], outputs=[upper, InferRequestedOutput("length")], headers=AS_API)

    result = await served.triton(infer)
    assert result.get_output("upper")["parameters"]["shared_memory_byte_size"] == size
    assert shm.get_contents_as_numpy(handle_out, np.object_, [2]).tolist() == [
        "HÉLLO".encode(), "WÖRLD".encode()]
    assert result.as_numpy("length").tolist() == [5, 5]


async def test_every_offset_and_size_is_checked(served: Served, regions: Regions) -> None:
    key, _ = regions.create("in", X.nbytes)
    key_out, handle_out = regions.create("out", 256)
    shm.set_shared_memory_region(handle_out, [np.full(256, 0xEE, np.uint8)])
    cases: list[tuple[Any, str]] = [
        (lambda c: c.register_system_shared_memory("a", "/a/b", 8, headers=AS_ADMIN),
         "shared memory key '/a/b' is not a POSIX shared memory name"),
        (lambda c: c.register_system_shared_memory("a", "/../etc/passwd", 8, headers=AS_ADMIN),
         "is not a POSIX shared memory name"),
        (lambda c: c.register_system_shared_memory("a", key, 8, X.nbytes, headers=AS_ADMIN),
         f"shared memory key '{key}' holds {X.nbytes} bytes: offset {X.nbytes} and byte size 8 "
         f"reach past its end"),
        (lambda c: c.register_system_shared_memory("a", key, X.nbytes + 1, headers=AS_ADMIN),
         "reach past its end"),
        (lambda c: c.register_system_shared_memory("in", key_out, 8, headers=AS_ADMIN),
         "shared memory region 'in' already in manager"),
        (mlp_in_regions, "Input 'x': Unable to find shared memory region: 'in'"),
    ]
    await register(served, "in", key, X.nbytes)
    for call, says in cases[:5]:
        status, message = await served.refused(call)
        assert (status, says in message) == (400, True), message
    await served.triton(lambda c: c.unregister_system_shared_memory("in", headers=AS_ADMIN))
    assert await served.refused(cases[5][0]) == (400, cases[5][1])
    await register(served, "in", key, X.nbytes)
    await register(served, "out", key_out, 200)  # of 256 bytes

    def infer(x: InferInput, output_size: int = PROBS.nbytes) -> Any:
        def call(client: InferenceServerClient) -> Any:
            probs = InferRequestedOutput("probs")
            probs.set_shared_memory("out", output_size, offset=80)
            return client.infer("mlp", [x], outputs=[probs], headers=AS_API)
        return call

    def x_at(byte_size: int, offset: int = 0) -> InferInput:
        return InferInput("x", list(X.shape), "FP32").set_shared_memory("in", byte_size, offset)

    for call, says in [
        (infer(x_at(X.nbytes - 8, 16)), f"Input 'x': offset 16 and byte size {X.nbytes - 8} "
                                        f"reach past the end of shared memory region 'in'"),
        (infer(x_at(X.nbytes + 4)), "reach past the end of shared memory region 'in'"),
        (infer(x_at(X.nbytes - 4)), f"Input 'x': shape [3, 256] of float32 needs {X.nbytes} "
                                    f"bytes, got {X.nbytes - 4}"),
        (infer(x_at(X.nbytes), output_size=PROBS.nbytes - 4),
         f"shared memory size specified with the request for output 'probs' "
         f"({PROBS.nbytes - 4} bytes) should be at least {PROBS.nbytes} bytes to hold the "
         f"results"),
        (infer(x_at(X.nbytes), output_size=121), "Output 'probs': offset 80 and byte size 121 "
                                                 "reach past the end"),
    ]:
        status, message = await served.refused(call)
        assert (status, says in message) == (400, True), message
    # No refusal wrote anything: the sentinel bytes are whole.
    assert (shm.get_contents_as_numpy(handle_out, np.uint8, [256]) == 0xEE).all()
    # An input both in a region and in the body is refused.
    both = await served.http.post("/v2/models/mlp/infer", headers=AS_API, json={"inputs": [{
        "name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0], "parameters": {
            "shared_memory_region": "in", "shared_memory_byte_size": 4}}]})
    assert (both.status_code, both.json()) == (400, {"error": (
        "Input 'x': give shared memory, 'data' or binary_data_size, only one")})


async def test_tokens_guard_the_regions(served: Served) -> None:
    assert await served.refused(lambda c: c.register_system_shared_memory(
        "a", "/k", 8, headers=AS_API)) == (
        401, "Invalid bearer token: admin calls need INFERNO_ADMIN_TOKEN as a bearer token")
    status, _ = await served.refused(lambda c: c.unregister_system_shared_memory())
    assert status == 401
    status, _ = await served.refused(lambda c: c.get_system_shared_memory_status())
    assert status == 401
    assert await served.refused(lambda c: c.get_system_shared_memory_status(
        "nope", headers=AS_API)) == (404, "Unable to find system shared memory region: 'nope'")


async def test_off_every_route_and_parameter_says_how_to_turn_it_on(
        server: Served, regions: Regions) -> None:
    key, _ = regions.create("in", X.nbytes)
    for call in [lambda c: c.register_system_shared_memory("in", key, X.nbytes),
                 lambda c: c.get_system_shared_memory_status(),
                 lambda c: c.unregister_system_shared_memory(),
                 mlp_in_regions]:
        status, message = await server.refused(call)
        assert (status, OFF in message) == (400, True), message
    metadata = await server.triton(lambda c: c.get_server_metadata())
    assert "system_shared_memory" not in metadata["extensions"]


async def test_a_cluster_facade_reads_the_region(running: Cluster, serve: Serve,  # noqa: F811
                                                 regions: Regions) -> None:
    await running.worker(preload=["mlp"])
    facade, _ = await running.facade(shared_memory="system")
    await wait_ready(facade)
    await mlp_through_regions(await serve(facade.app), regions)
