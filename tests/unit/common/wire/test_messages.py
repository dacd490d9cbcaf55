"""Queue messages (common/wire/messages.py): request bodies of either content type, request
headers, replies. A bad reply is a ``WorkerFailed``, never an exception in the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

import common.errors as errors
from common.errors import InfernoError, InvalidInput, WorkerFailed, error_from_code
from common.model.dtypes import DType, float_to_bf16_bits
from common.wire.framing import encode_frame
from common.wire.messages import (
    HEADER_DEADLINE,
    HEADER_OUTPUTS,
    JSON_CONTENT_TYPE,
    STATUS_OK,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    RequestHeaders,
    decode_inputs,
    decode_reply,
    encode_reply,
    parse_request_headers,
    queue_name,
    reply_content_type,
    request_headers,
    routing_key,
)
from tests.unit.common.wire.frames import assert_same, header_of
from tests.unit.common.wire.signature import SIGNATURE


def json_body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def test_decode_inputs_dispatches_on_the_content_type() -> None:
    x = np.ones((1, 2), np.float32)
    h = float_to_bf16_bits([2.0])
    arrays, outputs = decode_inputs(encode_frame({"x": x, "h": h}, {"h": DType.BFLOAT16}),
                                    TENSORS_CONTENT_TYPE, SIGNATURE)
    assert_same(arrays["x"], x)
    assert outputs is None
    arrays, outputs = decode_inputs(
        json_body(inputs={"x": {"data": [[1, 1]]}, "h": {"data": [2.0]}}, outputs=["y"]),
        JSON_CONTENT_TYPE, SIGNATURE)
    assert_same(arrays["h"], h)
    assert outputs == ["y"]


@pytest.mark.parametrize(("tensors", "dtypes", "content_type", "message"), [
    ({"x": np.ones((1, 2), np.float32), "h": np.ones(1, np.uint16)}, None,
     TENSORS_CONTENT_TYPE, "Input 'h': expected dtype bfloat16, got uint16"),
    ({"x": np.ones((1, 2), np.float64), "h": np.ones(1, np.uint16)}, {"h": DType.BFLOAT16},
     TENSORS_CONTENT_TYPE, "Input 'x': expected dtype float32, got float64"),
    ({"x": np.ones((1, 2), np.float32)}, None, TENSORS_CONTENT_TYPE,
     "Missing required input(s): h"),
    ({"x": np.ones((1, 2), np.float32), "h": np.ones(1, np.uint16), "q": np.ones(1)},
     {"h": DType.BFLOAT16}, TENSORS_CONTENT_TYPE, "Unexpected input(s): q"),
    ({}, None, "application/octet-stream", "Unsupported content type"),
    ({}, None, None, "Unsupported content type None"),
])
def test_decode_inputs_errors_are_invalid_input(tensors: dict[str, np.ndarray],
                                                dtypes: dict[str, DType] | None,
                                                content_type: str | None, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_inputs(encode_frame(tensors, dtypes), content_type, SIGNATURE)
    assert message in str(info.value)


# --- request headers -------------------------------------------------------------------------


def test_request_headers_round_trip() -> None:
    headers = request_headers(1_700_000_000.1234, ["y", "z"])
    assert headers == {HEADER_DEADLINE: 1_700_000_000_123, HEADER_OUTPUTS: "y,z"}
    parsed = parse_request_headers(headers)
    assert parsed == RequestHeaders(deadline=1_700_000_000.123, outputs=["y", "z"])
    assert request_headers(5.0) == {HEADER_DEADLINE: 5000}
    assert parse_request_headers(None) == parse_request_headers({}) == RequestHeaders()


@pytest.mark.parametrize(("headers", "expected"), [
    ({HEADER_DEADLINE: "1700000000500"}, RequestHeaders(deadline=1_700_000_000.5)),
    ({HEADER_DEADLINE: b"1700000000500"}, RequestHeaders(deadline=1_700_000_000.5)),
    ({HEADER_DEADLINE: 1.7e12}, RequestHeaders(deadline=1.7e9)),
    ({HEADER_OUTPUTS: " y , z ,"}, RequestHeaders(outputs=["y", "z"])),
    ({HEADER_OUTPUTS: ["y", b"z"]}, RequestHeaders(outputs=["y", "z"])),
    ({HEADER_OUTPUTS: ""}, RequestHeaders()),
    # Headers Inferno does not read are ignored, whatever they hold: inferno-codec was once
    # sent (informational) and must not reject a message from an old producer.
    ({"inferno-codec": 1, "x-other": 1}, RequestHeaders()),
])
def test_request_headers_from_other_clients(headers: dict[str, Any],
                                            expected: RequestHeaders) -> None:
    assert parse_request_headers(headers) == expected


@pytest.mark.parametrize(("headers", "message"), [
    ({HEADER_DEADLINE: "soon"}, "'inferno-deadline' must be epoch milliseconds"),
    ({HEADER_DEADLINE: True}, "'inferno-deadline'"),
    ({HEADER_DEADLINE: -5}, "'inferno-deadline'"),
    ({HEADER_DEADLINE: float("nan")}, "'inferno-deadline'"),
    ({HEADER_DEADLINE: [1]}, "'inferno-deadline'"),
    ({HEADER_OUTPUTS: 3}, "'inferno-outputs'"),
    ({HEADER_OUTPUTS: ["y", 3]}, "'inferno-outputs'"),
])
def test_malformed_request_headers_are_invalid_input(headers: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_request_headers(headers)
    assert message in str(info.value)


# --- replies ---------------------------------------------------------------------------------


def test_ok_reply_round_trips_with_logical_dtypes() -> None:
    outputs = {"y": np.array([1.5, 2.5], np.float32), "h": float_to_bf16_bits([3.0, 4.0])}
    body, status = encode_reply(PredictReply(outputs=outputs), {"h": DType.BFLOAT16})
    assert status == STATUS_OK and reply_content_type(status) == TENSORS_CONTENT_TYPE
    assert header_of(body)["tensors"][1]["dtype"] == "bfloat16"
    reply = decode_reply(body, status)
    assert reply.error is None
    for name, array in outputs.items():
        assert_same(reply.result()[name], array)


def test_ok_reply_without_outputs() -> None:
    body, status = encode_reply(PredictReply())
    assert decode_reply(body, status) == PredictReply()


ERROR_CLASSES = [cls for name in errors.__all__
                 if isinstance(cls := getattr(errors, name), type)]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.code)
def test_error_replies_round_trip_to_the_same_class(cls: type[InfernoError]) -> None:
    body, status = encode_reply(PredictReply(error=cls("it went wrong: 'x' ✗")))
    assert status == cls.code
    assert reply_content_type(status) == JSON_CONTENT_TYPE
    assert orjson.loads(body) == {"code": cls.code, "message": "it went wrong: 'x' ✗"}
    error = decode_reply(body, status).error
    assert type(error) is cls and type(error) is type(error_from_code(cls.code, ""))
    assert error.message == "it went wrong: 'x' ✗"
    with pytest.raises(cls):
        decode_reply(body, status.encode()).result()


def test_outputs_that_cannot_be_encoded_become_an_error_reply() -> None:
    for outputs, dtypes in [({"y": np.array([1], dtype=object)}, None),
                            ({"y": np.array(["a"], dtype=np.str_)}, None),
                            ({"y": np.zeros(2, np.float64)}, {"y": DType.FLOAT32})]:
        body, status = encode_reply(PredictReply(outputs=outputs), dtypes)
        assert status == WorkerFailed.code
        assert "Could not encode the outputs" in orjson.loads(body)["message"]


@pytest.mark.parametrize(("body", "status", "cls", "message"), [
    (b"\x00\x01garbage", STATUS_OK, WorkerFailed, "Malformed reply from the worker"),
    (orjson.dumps({"code": "overloaded", "message": "m"}), STATUS_OK, WorkerFailed,
     "Malformed reply"),
    (encode_frame({}), None, WorkerFailed, "without a valid 'inferno-status'"),
    (encode_frame({}), "", WorkerFailed, "without a valid 'inferno-status'"),
    (b"queue full", "overloaded", errors.Overloaded, "queue full"),
    (b"", "deadline_exceeded", errors.DeadlineExceeded, "deadline_exceeded"),
    (orjson.dumps({"code": "x", "message": 5}), "invalid_input", InvalidInput, '"message":5'),
    (orjson.dumps({"code": "weird", "message": "m"}), "weird", InfernoError, "m"),
])
def test_bad_replies_never_raise(body: bytes, status: str | None, cls: type[InfernoError],
                                 message: str) -> None:
    error = decode_reply(body, status).error
    assert type(error) is cls
    assert message in str(error)


def test_names() -> None:
    assert routing_key("mnist", 3) == "mnist.v3"
    assert queue_name("mnist", 3) == "inferno.mnist.v3"


def test_string_inputs_decode_from_both_content_types() -> None:
    from common.model.signature import Signature

    signature = Signature.model_validate({
        "inputs": [{"name": "text", "dtype": "string", "shape": ["batch"]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})
    texts = np.empty(2, dtype=object)
    texts[:] = ["héllo", ""]
    json_body = orjson.dumps({"inputs": {"text": {"data": ["héllo", ""]}}})
    for body, content_type in [(encode_frame({"text": texts}), TENSORS_CONTENT_TYPE),
                               (json_body, JSON_CONTENT_TYPE)]:
        arrays, _ = decode_inputs(body, content_type, signature)
        assert arrays["text"].dtype == object and arrays["text"].tolist() == ["héllo", ""]
    with pytest.raises(InvalidInput, match="element 1 is not a string"):
        decode_inputs(orjson.dumps({"inputs": {"text": {"data": ["a", 2]}}}), JSON_CONTENT_TYPE,
                      signature)
    with pytest.raises(InvalidInput, match="expected dtype string, got float32"):
        decode_inputs(encode_frame({"text": np.zeros(2, np.float32)}), TENSORS_CONTENT_TYPE,
                      signature)


def test_string_outputs_go_in_a_tensor_reply() -> None:
    texts = np.empty((2, 1), dtype=object)
    texts[:, 0] = ["a", "日本"]
    body, status = encode_reply(PredictReply(outputs={"y": texts}), {"y": DType.STRING})
    assert status == STATUS_OK
    reply = decode_reply(body, status)
    assert reply.outputs["y"].tolist() == [["a"], ["日本"]]
