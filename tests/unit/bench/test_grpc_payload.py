"""The gRPC driver's request: the tensors v2-binary sends, in a ``ModelInferRequest``."""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

from bench.payload import ModelInfo, TensorInfo, grpc_infer, v2_binary
from bench.runner import _endpoint

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
