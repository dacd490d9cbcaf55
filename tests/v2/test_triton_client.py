"""The v2 API through Triton's own Python client (``tritonclient[http]``), embedded server.

``TestCore`` holds the checks that test_triton_client_distributed.py runs again against a cluster
(it overrides the ``server`` fixture); the tests after it need the embedded server itself: its
worker, its metrics, the slow model's single runner slot.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from tritonclient.http import InferenceServerClient, InferInput, InferResult
from tritonclient.utils import InferenceServerException

from tests.gate import HOLD, Gate
from tests.v2.conftest import Served, ServeEmbedded, tensor, unknown, wanted

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2]
X = np.random.default_rng(7).random((3, 256), dtype=np.float32)
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]


@functools.cache
def mlp_reference(version: int) -> dict[str, np.ndarray[Any, Any]]:
    """What the sample mlp's TorchScript artifact computes for ``X``, run here directly."""
    module = torch.jit.load(str(ROOT / "models" / "mlp" / str(version) / "model.pt"))
    names = ["probs", "label", "logits"][:2 if version == 1 else 3]
    with torch.inference_mode():
        return {n: t.numpy() for n, t in zip(names, module(torch.from_numpy(X)), strict=True)}


def assert_mlp(result: InferResult, version: int, names: list[str]) -> None:
    reference = mlp_reference(version)
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("mlp", str(version))
    assert [o["name"] for o in response["outputs"]] == names
    for name in names:
        got = result.as_numpy(name)
        assert got.dtype == reference[name].dtype and got.shape == reference[name].shape, name
        # Not bit for bit: a binary input is a view at an arbitrary offset of the request body,
        # and the CPU matmul kernels round differently with the data's alignment (an ulp or so;
        # see test_v2_http.py::test_binary_inputs_reach_the_model_aligned).
        np.testing.assert_allclose(got, reference[name], rtol=1e-5, atol=1e-7, err_msg=name)


def mlp_x(binary: bool = True) -> list[InferInput]:
    return [tensor("x", X, binary)]


def bag_inputs(tokens: list[list[int]], mask: list[list[bool]],
               binary: bool = True) -> list[InferInput]:
    return [tensor("tokens", np.array(tokens, dtype=np.int64), binary),
            tensor("mask", np.array(mask, dtype=np.bool_), binary)]


class TestCore:
    """Everything a Triton user does, against the ``server`` fixture (embedded here)."""

    async def test_server_health_and_metadata(self, server: Served) -> None:
        assert await server.triton(lambda c: c.is_server_live()) is True
        assert await server.triton(lambda c: c.is_server_ready()) is True
        assert await server.triton(lambda c: c.get_server_metadata()) == {
            "name": "inferno", "version": "0.1.0", "extensions": EXTENSIONS}

    async def test_model_metadata_and_config(self, server: Served) -> None:
        fp32 = {"datatype": "FP32", "shape": [-1, 10]}
        assert await server.triton(lambda c: c.get_model_metadata("mlp")) == {
            "name": "mlp", "versions": ["1", "2"], "platform": "pytorch_libtorch",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}],
            "outputs": [{"name": "probs", **fp32},
                        {"name": "label", "datatype": "INT64", "shape": [-1]},
                        {"name": "logits", **fp32}]}
        v1 = await server.triton(lambda c: c.get_model_metadata("mlp", "1"))
        assert v1["versions"] == ["1"] and [o["name"] for o in v1["outputs"]] == ["probs", "label"]
        # Symbolic dims (batch, seq, n) are -1; a Python model's platform is "python".
        bag = await server.triton(lambda c: c.get_model_metadata("bag"))
        assert (bag["platform"], bag["inputs"]) == ("python", [
            {"name": "tokens", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "mask", "datatype": "BOOL", "shape": [-1, -1]}])
        echo = await server.triton(lambda c: c.get_model_metadata("echo16"))
        assert [(o["name"], o["datatype"]) for o in echo["outputs"]] == [
            ("bf16", "BF16"), ("fp16", "FP16"), ("bf16_f32", "FP32"), ("fp16_f32", "FP32")]
        # Triton's model configuration: dims without the batch dimension.
        assert await server.triton(lambda c: c.get_model_config("mlp")) == {
            "name": "mlp", "platform": "pytorch_libtorch", "backend": "pytorch",
            "max_batch_size": 64,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [256]}],
            "output": [{"name": "probs", "data_type": "TYPE_FP32", "dims": [10]},
                       {"name": "label", "data_type": "TYPE_INT64", "dims": []},
                       {"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}],
            "dynamic_batching": {"max_queue_delay_microseconds": 5000},
            "instance_group": [{"count": 1, "kind": "KIND_AUTO"}]}
        config = await server.triton(lambda c: c.get_model_config("bag", "1"))
        assert config["input"][1] == {"name": "mask", "data_type": "TYPE_BOOL", "dims": [-1]}

    async def test_readiness_and_version_pinning(self, server: Served) -> None:
        def ready(name: str, version: str = "") -> Any:
            return server.triton(lambda c: c.is_model_ready(name, version))

        assert [await ready("mlp"), await ready("mlp", "2"), await ready("bag")] == [True] * 3
        # mlp v1 exists but is not loaded; sum is not loaded at all; nope does not exist.
        assert [await ready("mlp", "1"), await ready("sum"), await ready("nope")] == [False] * 3
        # The repository API loads the newest version only: v1 goes through the v1 admin API.
        load = await server.http.post("/v1/models:load", json={"name": "mlp", "version": 1})
        assert load.status_code == 200, load.text
        assert await ready("mlp", "1") is True
        pinned = await server.triton(lambda c: c.infer("mlp", mlp_x(), model_version="1"))
        assert_mlp(pinned, 1, ["probs", "label"])
        active = await server.triton(lambda c: c.infer("mlp", mlp_x()))
        assert_mlp(active, 2, ["probs", "label", "logits"])

    @pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True),
                                                           (True, False)],
                             ids=["json", "binary", "binary-in-json-out"])
    async def test_infer_encodings(self, server: Served, binary_in: bool,
                                   binary_out: bool) -> None:
        result = await server.triton(lambda c: c.infer(
            "mlp", mlp_x(binary_in), outputs=wanted("probs", "label", "logits",
                                                    binary=binary_out)))
        assert_mlp(result, 2, ["probs", "label", "logits"])
        for output in result.get_response()["outputs"]:
            if binary_out:
                nbytes = mlp_reference(2)[output["name"]].nbytes
                assert output["parameters"] == {"binary_data_size": nbytes} and "data" not in output
            else:  # flat, row-major
                assert "parameters" not in output
                assert len(output["data"]) == math.prod(output["shape"])

    async def test_output_selection_and_request_id(self, server: Served) -> None:
        # No outputs named: tritonclient asks for all of them, binary (binary_data_output).
        every = await server.triton(lambda c: c.infer("mlp", mlp_x(), request_id="trace-42"))
        assert every.get_response()["id"] == "trace-42"
        assert_mlp(every, 2, ["probs", "label", "logits"])
        # Selected outputs come back in the order asked for, each in the encoding asked for.
        chosen = await server.triton(lambda c: c.infer(
            "mlp", mlp_x(), outputs=[*wanted("logits", binary=False), *wanted("label")]))
        assert "id" not in chosen.get_response()
        assert_mlp(chosen, 2, ["logits", "label"])
        logits, label = chosen.get_response()["outputs"]
        assert "data" in logits and label["parameters"] == {"binary_data_size": 3 * 8}

    async def test_half_precision_through_echo16(self, server: Served) -> None:
        bf16 = np.array([[1.0, -2.5, 0.1, 3.0e38], [0.0, -0.0, 1e-30, 255.0]],
                        dtype=ml_dtypes.bfloat16)
        fp16 = np.array([[0.5, 65504.0, -0.0001, 6e-8], [1.0, 2.0, -3.0, 0.333]],
                        dtype=np.float16)
        binary = await server.triton(lambda c: c.infer(
            "echo16", [tensor("bf16", bf16), tensor("fp16", fp16)]))
        # Binary both ways: bit for bit, and the widenings exact.
        assert binary.as_numpy("bf16").dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(binary.as_numpy("bf16").view(np.uint16),
                                      bf16.view(np.uint16))
        np.testing.assert_array_equal(binary.as_numpy("fp16").view(np.uint16),
                                      fp16.view(np.uint16))
        np.testing.assert_array_equal(binary.as_numpy("bf16_f32"), bf16.astype(np.float32))
        np.testing.assert_array_equal(binary.as_numpy("fp16_f32"), fp16.astype(np.float32))
        # FP16 as JSON numbers both ways (tritonclient sends BF16 only binary); BF16 as JSON out.
        as_json = await server.triton(lambda c: c.infer(
            "echo16", [tensor("bf16", bf16), tensor("fp16", fp16, binary=False)],
            outputs=wanted("fp16", "bf16", "fp16_f32", binary=False)))
        assert all("data" in o for o in as_json.get_response()["outputs"])
        np.testing.assert_array_equal(as_json.as_numpy("fp16"), fp16)
        np.testing.assert_array_equal(as_json.as_numpy("bf16").view(np.uint16),
                                      bf16.view(np.uint16))
        np.testing.assert_array_equal(as_json.as_numpy("fp16_f32"), fp16.astype(np.float32))

    async def test_python_model_with_bool_int64_and_a_symbolic_dim(self, server: Served) -> None:
        big = 2**62 + 1  # beyond float64's 53 bits: exact in binary and in JSON
        for binary in (True, False):
            result = await server.triton(lambda c, b=binary: c.infer("bag", bag_inputs(
                [[5, 7, 9, big], [1, 2, 3, 4]],
                [[True, True, False, True], [True, True, False, False]], b)))
            assert result.as_numpy("sum").tolist() == [5 + 7 + big, 3], binary
            assert result.as_numpy("count").tolist() == [3, 2]
            assert result.as_numpy("mean").dtype == np.float32
            # seq is symbolic: another length in the next request is fine.
            longer = await server.triton(lambda c, b=binary: c.infer("bag", bag_inputs(
                [list(range(7))], [[True] * 7], b), outputs=wanted("mean", binary=b)))
            assert longer.as_numpy("mean").tolist() == [3.0]

    async def test_repository_index_load_and_unload(self, server: Served) -> None:
        def index() -> Any:
            return server.triton(lambda c: {(m["name"], m["version"]): (m["state"], m["reason"])
                                            for m in c.get_model_repository_index()
                                            if m["name"] in ("mlp", "sum")})

        assert await index() == {("mlp", "1"): ("UNAVAILABLE", "unloaded"),
                                 ("mlp", "2"): ("READY", ""),
                                 ("sum", "1"): ("UNAVAILABLE", "unloaded")}
        await server.triton(lambda c: c.load_model("sum"))
        assert (await index())["sum", "1"] == ("READY", "")
        assert await server.triton(lambda c: c.is_model_ready("sum")) is True
        result = await server.triton(lambda c: c.infer(
            "sum", [tensor("x", np.array([[1.0, 2.0, 3.5]], dtype=np.float32))]))
        assert result.as_numpy("total").tolist() == [6.5]
        await server.triton(lambda c: c.unload_model("sum"))
        assert (await index())["sum", "1"] == ("UNAVAILABLE", "unloaded")
        assert await server.triton(lambda c: c.is_model_ready("sum")) is False
        # Unloading a model that is not loaded succeeds, as in Triton; the server stays ready.
        await server.triton(lambda c: c.unload_model("sum"))
        assert await server.triton(lambda c: c.is_server_ready()) is True
        assert await server.refused(lambda c: c.infer("sum", [tensor("x", X)])) == (
            404, unknown("sum",
                         "Model 'sum' is not loaded; load it with POST /v1/models:load"))
        assert await server.refused(lambda c: c.load_model("nope")) == (
            404, unknown("nope", "Model 'nope' not found in the repository"))
        assert await server.refused(lambda c: c.unload_model("nope")) == (
            404, unknown("nope", "Model 'nope' not found in the repository"))

    async def test_invalid_requests_raise_the_servers_status_and_message(
            self, server: Served) -> None:
        x = np.zeros((1, 256), dtype=np.float32)
        cases: dict[str, tuple[str, list[InferInput], dict[str, Any]]] = {
            "wrong datatype": ("mlp", [tensor("x", x.astype(np.float64))], {}),
            "wrong shape": ("mlp", [tensor("x", x[:, :255])], {}),
            "wrong rank": ("mlp", [tensor("x", x[0])], {}),
            "unknown input": ("mlp", [tensor("x", x), tensor("y", x)], {}),
            "missing input": ("bag", [tensor("tokens", np.ones((1, 2), np.int64))], {}),
            "unknown output": ("mlp", [tensor("x", x)], {"outputs": wanted("nope")}),
            "unknown model": ("nope", [tensor("x", x)], {}),
            "unknown version": ("mlp", [tensor("x", x)], {"model_version": "9"}),
            "version not loaded": ("mlp", [tensor("x", x)], {"model_version": "1"}),
            "batch too large": ("mlp", [tensor("x", np.zeros((65, 256), np.float32))], {}),
        }

        def attempt(client: InferenceServerClient) -> dict[str, tuple[int, str]]:
            seen = {}
            for case, (model, inputs, options) in cases.items():
                try:
                    client.infer(model, inputs, **options)
                    seen[case] = (200, "")
                except InferenceServerException as exc:
                    seen[case] = (int(exc.status() or 0), exc.message())
            return seen

        assert await server.triton(attempt) == {
            "wrong datatype": (400, "Input 'x': expected datatype FP32, got FP64"),
            "wrong shape": (400, "Input 'x': expected shape [batch, 256], got [1, 255]"),
            "wrong rank": (400, "Input 'x': expected shape [batch, 256] (2 dims), got [256]"),
            "unknown input": (400, "Unexpected input(s): y. Expected inputs: x"),
            "missing input": (400, "Missing required input(s): mask. "
                                   "Expected inputs: mask, tokens"),
            "unknown output": (400, "Unknown output(s): nope. "
                                    "Available outputs: label, logits, probs"),
            "unknown model": (404, unknown("nope", "Model 'nope' not found in the repository")),
            "unknown version": (404, unknown("mlp",
                                             "Model 'mlp' has no version 9 (versions: 1, 2)")),
            "version not loaded": (404, unknown(
                "mlp", "Model 'mlp' version 1 is not loaded (loaded: 2)")),
            "batch too large": (400, "Batch of 65 rows exceeds max_batch_size 64 "
                                     "of model 'mlp'"),
        }
        assert await server.refused(lambda c: c.get_model_metadata("nope")) == (
            404, unknown("nope", "Model 'nope' not found in the repository"))
        assert await server.refused(lambda c: c.get_model_config("mlp", "9")) == (
            404, unknown("mlp", "Model 'mlp' has no version 9 (versions: 1, 2)"))


# Embedded only from here: these need the server's own worker, metrics and the slow model.

def slow_inputs(delay_ms: float) -> list[InferInput]:
    return [tensor("x", np.array([[1.0, 2.0]], dtype=np.float32)),
            tensor("delay_ms", np.array([delay_ms], dtype=np.float32))]


def batches_started(server: Served) -> float:
    assert server.embedded is not None
    return server.embedded.registry.get_sample_value(
        "infer_batch_size_count", {"model": "slow"}) or 0.0


async def test_timeout_is_in_microseconds_and_answers_504(
        serve_embedded: ServeEmbedded, gate: Gate) -> None:
    server = await serve_embedded(preload=["slow"])
    holder = asyncio.create_task(server.triton(lambda c: c.infer("slow", slow_inputs(HOLD))))
    # The holder's batch starting on the worker thread has no public event: poll, bounded.
    async with asyncio.timeout(10):
        while batches_started(server) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    # 50 000 µs = 50 ms, over while the gate holds the holder's batch.
    assert await server.refused(lambda c: c.infer("slow", slow_inputs(0), timeout=50_000)) == (
        504, "Model 'slow' did not answer within the request's deadline")
    gate.open()
    # 5 000 000 µs = 5 s is enough to wait for the holder (read as ms it would be 83 minutes).
    waited = await server.triton(lambda c: c.infer("slow", slow_inputs(0), timeout=5_000_000))
    assert waited.as_numpy("y").tolist() == [[1.0, 2.0]]
    assert (await holder).as_numpy("y").tolist() == [[1.0, 2.0]]


async def test_full_queue_answers_503_overloaded(serve_embedded: ServeEmbedded,
                                                 gate: Gate) -> None:
    server = await serve_embedded(preload=["slow"])
    assert server.embedded is not None
    registry = server.embedded.registry

    def flood(client: InferenceServerClient) -> list[tuple[int, str]]:
        # tritonclient's own concurrency: 24 requests in flight on 24 connections. Every batch
        # waits for the gate, so the model takes prefetch (4 rows x 1 slot x 2) + queue
        # max_length (8) = 16 and refuses the other 8 while nothing has been computed.
        pending = [client.async_infer("slow", slow_inputs(HOLD)) for _ in range(24)]
        outcomes = []
        for request in pending:
            try:
                request.get_result()
                outcomes.append((200, ""))
            except InferenceServerException as exc:
                outcomes.append((int(exc.status() or 0), exc.message()))
        return outcomes

    def refused() -> float:
        return registry.get_sample_value(
            "infer_exceptions_total", {"model": "slow", "route": "v2", "code": "overloaded"}
        ) or 0.0

    flooding = asyncio.create_task(server.triton(flood, concurrency=24))
    # The refusals are answered while the gate holds the rest: their count is the event.
    async with asyncio.timeout(30):
        while refused() < 8:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    gate.open()
    outcomes = sorted(await flooding)
    overloaded = (503, "Model 'slow' version 1 is overloaded: 8 requests already queued")
    assert outcomes == [(200, "")] * 16 + [overloaded] * 8
    assert (await server.triton(lambda c: c.infer("slow", slow_inputs(0)))).as_numpy("y") \
        is not None


async def test_without_a_live_worker_nothing_is_ready(server: Served) -> None:
    assert server.embedded is not None
    await server.embedded.worker.stop()
    await server.embedded.facade.view.refresh()
    assert await server.triton(lambda c: c.is_server_live()) is True
    assert await server.triton(lambda c: c.is_server_ready()) is False
    assert await server.triton(lambda c: c.is_model_ready("mlp")) is False
    assert await server.refused(lambda c: c.infer("mlp", mlp_x())) == (
        503, "No live worker serves model 'mlp' version 2 yet")


async def test_custom_parameters_are_accepted_and_ignored(server: Served) -> None:
    result = await server.triton(lambda c: c.infer(
        "mlp", mlp_x(), outputs=wanted("label"), parameters={"tenant": "a", "beam": 4}))
    assert result.as_numpy("label").tolist() == mlp_reference(2)["label"].tolist()


async def test_a_client_that_leaves_costs_no_model_compute(serve_embedded: ServeEmbedded,
                                                           gate: Gate) -> None:
    server = await serve_embedded(preload=["slow"])
    assert server.embedded is not None
    registry = server.embedded.registry
    holder = asyncio.create_task(server.triton(lambda c: c.infer("slow", slow_inputs(HOLD))))
    async with asyncio.timeout(10):
        while batches_started(server) < 1:  # noqa: ASYNC110 - the worker thread: poll, bounded
            await asyncio.sleep(0.005)
    # A raw client queues a request behind the held batch, then closes its connection.
    body = json.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]},
        {"name": "delay_ms", "datatype": "FP32", "shape": [1], "data": [0.0]}]}).encode()
    host, port = server.url.split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()

    def cancelled() -> float:
        return registry.get_sample_value(
            "infer_exceptions_total", {"model": "slow", "route": "v2", "code": "cancelled"}
        ) or 0.0

    # Queued (the in-process queue's own count: no public event says so), then gone.
    queue = server.embedded.broker._queues["inferno.slow.v1"]
    async with asyncio.timeout(10):
        while len(queue.ready) + sum(c.unacked for c in queue.consumers) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    writer.close()
    async with asyncio.timeout(10):  # the facade notices within DisconnectWatch's watch delay
        while cancelled() < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    gate.open()
    assert (await holder).as_numpy("y").tolist() == [[1.0, 2.0]]
    after = await server.triton(lambda c: c.infer("slow", slow_inputs(0)))
    assert after.as_numpy("y").tolist() == [[1.0, 2.0]]
    # Two batches ran, the holder's and the last one's: the request whose client left never did.
    assert batches_started(server) == 2
    assert registry.get_sample_value("infer_expired_total", {"model": "slow"}) == 1
