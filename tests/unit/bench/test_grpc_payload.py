"""The gRPC drivers' request: the tensors v2-binary sends, in a ``ModelInferRequest``; the bare
floor's answer: the model's outputs, raw, in a ``ModelInferResponse``."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import service_pb2 as pb

from bench.payload import (
    ModelInfo,
    TensorInfo,
    grpc_infer,
    grpc_response,
    local_model_info,
    v2_binary,
)
from bench.runner import _endpoint

ROOT = Path(__file__).resolve().parents[3]
MODEL = ModelInfo("pair", 3, (TensorInfo("x", "float32", ("batch", 4)),
                              TensorInfo("ids", "int64", ("batch", "seq"))), 64)


def test_grpc_request_carries_the_v2_binary_tensors_raw() -> None:
    request = pb.ModelInferRequest.FromString(grpc_infer(MODEL, 2, seed=0))
    assert request.model_name == "pair" and request.model_version == ""
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("x", "FP32", [2, 4]), ("ids", "INT64", [2, 8])]
    assert not any(t.HasField("contents") for t in request.inputs)
    binary = v2_binary(MODEL, 2, seed=0).body
    assert binary.endswith(b"".join(request.raw_input_contents))
    assert [len(raw) for raw in request.raw_input_contents] == [2 * 4 * 4, 2 * 8 * 8]


def test_endpoint_reads_a_url_or_a_grpc_address() -> None:
    http = _endpoint("http://127.0.0.1:8000/v1", b"r")
    assert (http.host, http.port) == ("127.0.0.1", 8000)
    grpc = _endpoint("10.0.0.2:8001", b"r")
    assert (grpc.host, grpc.port) == ("10.0.0.2", 8001)


def test_floor_answer_is_the_models_outputs_raw() -> None:
    mlp = local_model_info(str(ROOT / "models"), "mlp")
    assert [(t.name, t.dtype) for t in mlp.outputs] == [
        ("probs", "float32"), ("label", "int64"), ("logits", "float32")]
    response = pb.ModelInferResponse.FromString(grpc_response(mlp, 3))
    assert (response.model_name, response.model_version) == ("mlp", "2")
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("probs", "FP32", [3, 10]), ("label", "INT64", [3]), ("logits", "FP32", [3, 10])]
    assert [len(raw) for raw in response.raw_output_contents] == [120, 24, 120]
