"""The Open Inference Protocol over gRPC through Triton's own clients (``tritonclient.grpc``,
sync, aio and streaming) and the generated stub, against an embedded server."""

from __future__ import annotations

import asyncio
import base64
import queue
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import (
    InferenceServerClient,
    InferRequestedOutput,
    InferResult,
    service_pb2,
)
from tritonclient.grpc.aio import InferenceServerClient as AioClient
from tritonclient.utils import InferenceServerException

from tests.grpc.conftest import GrpcServed, ServeGrpc, tensor
from tests.v2.test_triton_client import X, mlp_reference

pytestmark = pytest.mark.asyncio

MLP_OUTPUTS = ["probs", "label", "logits"]


def assert_mlp(result: InferResult, version: int, names: list[str]) -> None:
    """The mlp's answer: the version that served it, and what its artifact computes."""
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("mlp", str(version))
    assert [o.name for o in response.outputs] == names
    for name in names:
        got, want = result.as_numpy(name), mlp_reference(version)[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=name)


def infer_request(**fields: Any) -> Any:
    """A ModelInferRequest for the mlp, from its JSON form (bytes as base64)."""
    return json_format.ParseDict({"model_name": "mlp", **fields},
                                 service_pb2.ModelInferRequest())


async def test_health_metadata_and_config(server: GrpcServed) -> None:
    assert await server.triton(lambda c: c.is_server_live()) is True
    assert await server.triton(lambda c: c.is_server_ready()) is True
    assert await server.triton(lambda c: c.get_server_metadata(as_json=True)) == {
        "name": "inferno", "version": "0.1.0",
        "extensions": ["model_repository", "model_configuration", "statistics"]}
    # The same description as the REST API's, in the protocol's JSON form.
    rest = (await server.http.get("/v2/models/mlp")).json()
    assert await server.triton(lambda c: c.get_model_metadata("mlp", as_json=True)) == {
        **rest, "inputs": [{**t, "shape": [str(d) for d in t["shape"]]} for t in rest["inputs"]],
        "outputs": [{**t, "shape": [str(d) for d in t["shape"]]} for t in rest["outputs"]]}
    v1 = await server.triton(lambda c: c.get_model_metadata("mlp", "1"))
    assert list(v1.versions) == ["1"] and [o.name for o in v1.outputs] == ["probs", "label"]
    config = (await server.triton(lambda c: c.get_model_config("mlp"))).config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "mlp", "pytorch_libtorch", "pytorch", 64)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", 11, [256])]
    assert [(t.name, list(t.dims)) for t in config.output] == [
        ("probs", [10]), ("label", []), ("logits", [10])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    bag = (await server.triton(lambda c: c.get_model_config("bag", "1"))).config
    assert [list(t.dims) for t in bag.input] == [[-1], [-1]]  # variable dims are -1


async def test_infer_with_the_sync_client(server: GrpcServed) -> None:
    result = await server.triton(lambda c: c.infer("mlp", [tensor("x", X)], request_id="r-7"))
    assert result.get_response().id == "r-7"
    assert_mlp(result, 2, MLP_OUTPUTS)
    # Requested outputs come back in the order asked for.
    chosen = await server.triton(lambda c: c.infer(
        "mlp", [tensor("x", X)], outputs=[InferRequestedOutput("logits"),
                                          InferRequestedOutput("label")]))
    assert_mlp(chosen, 2, ["logits", "label"])


async def test_async_infer_of_the_sync_client(server: GrpcServed) -> None:
    """``async_infer``: the sync client's callback API, several calls in flight at once."""
    def calls() -> list[tuple[Any, Any]]:
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        with InferenceServerClient(server.url) as triton:
            for index in range(4):
                triton.async_infer("mlp", [tensor("x", X)], request_id=str(index),
                                   callback=lambda result, error: answers.put((result, error)))
            triton.async_infer("nope", [tensor("x", X)],
                               callback=lambda result, error: answers.put((result, error)))
            return [answers.get(timeout=30) for _ in range(5)]

    answers = await asyncio.to_thread(calls)
    results = [result for result, error in answers if error is None]
    assert sorted(r.get_response().id for r in results) == ["0", "1", "2", "3"]
    for result in results:
        assert_mlp(result, 2, MLP_OUTPUTS)
    [error] = [error for _, error in answers if error is not None]
    assert error.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
async def test_compressed_calls(server: GrpcServed, algorithm: str) -> None:
    """gRPC's own message compression (the client's ``compression_algorithm``), both ways."""
    result = await server.triton(lambda c: c.infer("mlp", [tensor("x", X)],
                                                   compression_algorithm=algorithm))
    assert_mlp(result, 2, MLP_OUTPUTS)


async def test_version_pinning(server: GrpcServed) -> None:
    assert await server.triton(lambda c: c.is_model_ready("mlp", "1")) is False
    load = await server.http.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert load.status_code == 200, load.text
    assert await server.triton(lambda c: c.is_model_ready("mlp", "1")) is True
    pinned = await server.triton(lambda c: c.infer("mlp", [tensor("x", X)], model_version="1"))
    assert_mlp(pinned, 1, ["probs", "label"])
    active = await server.triton(lambda c: c.infer("mlp", [tensor("x", X)], model_version=""))
    assert_mlp(active, 2, MLP_OUTPUTS)
    status, message = await server.refused(
        lambda c: c.infer("mlp", [tensor("x", X)], model_version="two"))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "model_version: Input should be a valid integer" in message
    status, message = await server.refused(
        lambda c: c.infer("mlp", [tensor("x", X)], model_version="9"))
    assert status == "StatusCode.NOT_FOUND" and "9" in message


async def test_the_aio_client_and_typed_contents(server: GrpcServed, stub: Any) -> None:
    async with AioClient(server.url) as client:
        assert await client.is_model_ready("mlp")
        assert_mlp(await client.infer("mlp", [tensor("x", X)]), 2, MLP_OUTPUTS)
    # Typed contents (the KServe SDK's way): numbers in fp32_contents, ints and bools in theirs.
    typed = await stub.ModelInfer(infer_request(inputs=[{
        "name": "x", "datatype": "FP32", "shape": list(X.shape),
        "contents": {"fp32_contents": X.reshape(-1).tolist()}}]))
    result = InferResult(typed)
    np.testing.assert_allclose(result.as_numpy("probs"), mlp_reference(2)["probs"], rtol=1e-5)
    bag = await stub.ModelInfer(infer_request(model_name="bag", inputs=[
        {"name": "tokens", "datatype": "INT64", "shape": [1, 3],
         "contents": {"int64_contents": [5, 7, 9]}},
        {"name": "mask", "datatype": "BOOL", "shape": [1, 3],
         "contents": {"bool_contents": [True, False, True]}}]))
    assert InferResult(bag).as_numpy("sum").tolist() == [14]


async def test_bytes_both_ways(server: GrpcServed, stub: Any) -> None:
    text = np.array(["hé", "", "grpc"], dtype=np.object_)
    result = await server.triton(lambda c: c.infer("strings", [tensor("text", text)]))
    assert result.as_numpy("upper").tolist() == ["HÉ".encode(), b"", b"GRPC"]
    assert result.as_numpy("length").tolist() == [2, 0, 4]
    typed = await stub.ModelInfer(infer_request(model_name="strings", inputs=[{
        "name": "text", "datatype": "BYTES", "shape": [1],
        "contents": {"bytes_contents": [base64.b64encode(b"ok").decode()]}}]))
    assert InferResult(typed).as_numpy("upper").tolist() == [b"OK"]


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                  "contents": {"fp32_contents": [0.5] * 256}}],
      "raw_input_contents": ["AAAAAA=="]},
     "INVALID_ARGUMENT", "Input 'x': give raw_input_contents or contents, not both"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256]}],
      "raw_input_contents": ["AAAAAA=="]},
     "INVALID_ARGUMENT", "Input 'x': shape [1, 256] of float32 needs 1024 bytes, got 4"),
    ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 256]}]},
     "INVALID_ARGUMENT", "Input 'x': expected datatype FP32, got FP64"),
    ({"model_name": "nope", "inputs": []}, "NOT_FOUND", "nope"),
])
async def test_bad_requests_name_what_is_wrong(stub: Any, fields: dict[str, Any], status: str,
                                               message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(infer_request(**fields))
    assert raised.value.code().name == status
    assert message in raised.value.details()


async def test_an_unknown_output_or_an_unserved_extension_is_refused(server: GrpcServed) -> None:
    status, message = await server.refused(lambda c: c.infer(
        "mlp", [tensor("x", X)], outputs=[InferRequestedOutput("nope")]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "nope" in message
    assert await server.refused(lambda c: c.get_trace_settings()) == (
        "StatusCode.UNIMPLEMENTED", "Inferno does not serve trace settings")
    assert await server.refused(lambda c: c.get_cuda_shared_memory_status()) == (
        "StatusCode.UNIMPLEMENTED", "Inferno does not serve CUDA shared memory")


async def test_a_stream_answers_each_request_and_survives_a_bad_one(server: GrpcServed) -> None:
    def stream() -> list[tuple[Any, Any]]:
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        with InferenceServerClient(server.url) as triton:
            triton.start_stream(callback=lambda result, error: answers.put((result, error)))
            try:
                triton.async_stream_infer("mlp", [tensor("x", X[:, :2])], request_id="bad")
                first = answers.get(timeout=30)  # the error, before the second is even sent
                triton.async_stream_infer("mlp", [tensor("x", X)], request_id="good")
                return [first, answers.get(timeout=30)]
            finally:
                triton.stop_stream()

    (bad, error), (good, no_error) = await asyncio.to_thread(stream)
    assert bad is None and isinstance(error, InferenceServerException)
    assert "Input 'x'" in error.message()
    assert no_error is None and good.get_response().id == "good"
    assert_mlp(good, 2, MLP_OUTPUTS)


async def test_the_aio_stream(server: GrpcServed) -> None:
    async def requests() -> AsyncIterator[dict[str, Any]]:
        for index in range(3):
            yield {"model_name": "mlp", "inputs": [tensor("x", X)], "request_id": str(index)}

    async with AioClient(server.url) as client:
        answers = [answer async for answer in client.stream_infer(requests())]
    assert sorted(r.get_response().id for r, e in answers if e is None) == ["0", "1", "2"]
    for result, _ in answers:
        assert_mlp(result, 2, MLP_OUTPUTS)


async def test_repository_index_load_and_unload(server: GrpcServed) -> None:
    def index() -> Any:
        return server.triton(lambda c: {(m.name, m.version): m.state for m in
                                        c.get_model_repository_index().models
                                        if m.name in ("mlp", "sum")})

    assert await index() == {("mlp", "1"): "UNAVAILABLE", ("mlp", "2"): "READY",
                             ("sum", "1"): "UNAVAILABLE"}
    await server.triton(lambda c: c.load_model("sum"))
    assert await server.triton(lambda c: c.is_model_ready("sum")) is True
    await server.triton(lambda c: c.unload_model("sum"))
    await server.triton(lambda c: c.unload_model("sum"))  # unloaded already: still a success
    assert (await index())[("sum", "1")] == "UNAVAILABLE"
    status, _ = await server.refused(lambda c: c.load_model("nope"))
    assert status == "StatusCode.NOT_FOUND"


async def test_a_deadline_becomes_the_request_timeout(server: GrpcServed) -> None:
    slow = [tensor("x", np.ones((1, 2), np.float32)),
            tensor("delay_ms", np.array([1500], np.float32))]
    status, _ = await server.refused(lambda c: c.infer("slow", slow, client_timeout=0.2))
    assert status == "StatusCode.DEADLINE_EXCEEDED"


async def test_tokens_and_the_message_limit(serve_grpc: ServeGrpc) -> None:
    server: GrpcServed = await serve_grpc(preload=["bag"], api_token="api-t",
                                          admin_token="admin-t", max_body_bytes=1024)
    bag = [tensor("tokens", np.array([[5, 7]], np.int64)),
           tensor("mask", np.array([[True, True]], np.bool_))]
    assert await server.triton(lambda c: c.is_server_live()) is True  # health is open
    status, _ = await server.refused(lambda c: c.infer("bag", bag))
    assert status == "StatusCode.UNAUTHENTICATED"
    api = {"authorization": "Bearer api-t"}
    assert await server.triton(lambda c: c.infer("bag", bag, headers=api).as_numpy(
        "sum").tolist()) == [12]
    status, _ = await server.refused(lambda c: c.get_model_repository_index(headers=api))
    assert status == "StatusCode.UNAUTHENTICATED"
    admin = {"authorization": "Bearer admin-t"}
    assert await server.triton(lambda c: c.get_model_repository_index(headers=admin))
    big = [tensor("tokens", np.zeros((1, 200), np.int64)),
           tensor("mask", np.ones((1, 200), np.bool_))]
    status, _ = await server.refused(lambda c: c.infer("bag", big, headers=api))
    assert status == "StatusCode.RESOURCE_EXHAUSTED"
