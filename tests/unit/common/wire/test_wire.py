"""The queue wire format: tensor framing, JSON bodies, request headers and replies.

A malformed message from a producer must never crash a worker: every way to break a body is an
``InvalidInput``, and a bad reply is a ``WorkerFailed``, never an exception in the caller.
"""

from __future__ import annotations

import base64
import random
import struct
from typing import Any

import numpy as np
import orjson
import pytest

import common.errors as errors
from common.errors import InfernoError, InvalidInput, WorkerFailed, error_from_code
from common.model.dtypes import DType, float_to_bf16_bits
from common.model.signature import Signature
from common.wire.messages import (
    HEADER_CODEC,
    HEADER_DEADLINE,
    HEADER_OUTPUTS,
    JSON_CONTENT_TYPE,
    STATUS_OK,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    RequestHeaders,
    decode_frame,
    decode_inputs,
    decode_json_inputs,
    decode_reply,
    encode_frame,
    encode_reply,
    parse_request_headers,
    queue_name,
    reply_content_type,
    request_headers,
    routing_key,
)


def sample(dtype: DType, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """An array of ``dtype`` (its storage type) with varied values, extremes included."""
    count = int(np.prod(shape))
    if dtype is DType.BOOL:
        return (np.arange(count) % 3 == 0).reshape(shape)
    if dtype is DType.BFLOAT16:
        return float_to_bf16_bits(np.linspace(-3e38, 3e38, count)).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype.numpy)
        values = np.arange(count).astype(dtype.numpy)
        if count:
            values.flat[0], values.flat[-1] = info.min, info.max
        return values.reshape(shape)
    values = np.linspace(-1, 1, count).astype(dtype.numpy)
    if count:
        values.flat[-1] = np.finfo(dtype.numpy).max
    return values.reshape(shape)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def frame(header: Any, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A hand-built body: ``header`` (dumped unless bytes) then ``data``."""
    raw = header if isinstance(header, bytes) else orjson.dumps(header)
    return struct.pack("<I", len(raw) if length is None else length) + raw + data


def header_of(body: bytes) -> dict[str, Any]:
    (length,) = struct.unpack_from("<I", body)
    header: dict[str, Any] = orjson.loads(body[4:4 + length])
    return header


def entry(name: str = "x", dtype: str = "float32", shape: Any = (2,), offset: Any = 0,
          nbytes: Any = 8) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset,
            "nbytes": nbytes}


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DType))
def test_every_dtype_round_trips_bit_exact(dtype: DType) -> None:
    array = sample(dtype)
    body = encode_frame({"t": array}, {"t": dtype})
    arrays, extra = decode_frame(body)
    assert_same(arrays["t"], array)
    assert extra == {}
    assert header_of(body)["tensors"][0]["dtype"] == dtype.value


def test_bfloat16_travels_as_its_bit_patterns_and_needs_its_logical_dtype() -> None:
    bits = float_to_bf16_bits([1.0, -2.5, np.nan])
    header = header_of(encode_frame({"b": bits}, {"b": DType.BFLOAT16}))
    assert header["tensors"][0]["dtype"] == "bfloat16"
    # Without the mapping, a uint16 array is a uint16 tensor: numpy cannot tell.
    assert header_of(encode_frame({"b": bits}))["tensors"][0]["dtype"] == "uint16"
    arrays, _ = decode_frame(encode_frame({"b": bits}, {"b": DType.BFLOAT16}))
    assert_same(arrays["b"], bits)


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (3, 0, 2), (1,), (1, 1, 1, 1)])
@pytest.mark.parametrize("dtype", [DType.FLOAT32, DType.BOOL, DType.INT64])
def test_zero_dimensional_and_empty_tensors(shape: tuple[int, ...], dtype: DType) -> None:
    array = sample(dtype, shape)
    arrays, _ = decode_frame(encode_frame({"t": array, "after": np.arange(3)}))
    assert_same(arrays["t"], array)
    assert_same(arrays["after"], np.arange(3))


@pytest.mark.parametrize("view", [
    lambda a: a.T,
    lambda a: a[:, ::2],
    lambda a: a[::-1],
    lambda a: np.broadcast_to(a[:1], (4, 6)),
], ids=["transposed", "strided", "reversed", "broadcast"])
def test_non_contiguous_arrays_are_sent_in_c_order(view: Any) -> None:
    array = view(np.arange(24, dtype=np.float64).reshape(4, 6))
    assert not array.flags.c_contiguous
    arrays, _ = decode_frame(encode_frame({"t": array}))
    assert_same(arrays["t"], np.ascontiguousarray(array))


def test_big_endian_arrays_are_sent_little_endian() -> None:
    array = np.arange(5, dtype=">i4")
    body = encode_frame({"t": array})
    assert_same(decode_frame(body)[0]["t"], np.arange(5, dtype="<i4"))


def test_multiple_tensors_keep_their_order_and_start_8_byte_aligned() -> None:
    tensors = {"a": np.arange(3, dtype=np.uint8), "b": np.ones((2, 3), np.float64),
               "c": np.array([True]), "d": np.arange(5, dtype=np.int16), "e": np.float32(7)}
    tensors["e"] = np.asarray(tensors["e"])
    body = encode_frame(tensors)
    (length,) = struct.unpack_from("<I", body)
    assert (4 + length) % 8 == 0
    header = orjson.loads(body[4:4 + length])
    assert [t["name"] for t in header["tensors"]] == list(tensors)
    assert all(t["offset"] % 8 == 0 for t in header["tensors"])
    arrays, _ = decode_frame(body)
    assert list(arrays) == list(tensors)
    for name, array in tensors.items():
        assert_same(arrays[name], array)


def test_extra_header_keys_round_trip() -> None:
    extra = {"outputs": ["y", "z"], "error": {"code": "overloaded", "message": "full"}, "n": 3}
    arrays, got = decode_frame(encode_frame({"x": np.zeros(2, np.float32)}, extra=extra))
    assert got == extra
    assert list(arrays) == ["x"]
    assert decode_frame(encode_frame({}, extra={"k": "v"})) == ({}, {"k": "v"})


def test_tensors_is_a_reserved_extra_key() -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode_frame({}, extra={"tensors": []})


def test_encoding_refuses_storage_that_does_not_match_the_declared_dtype() -> None:
    with pytest.raises(ValueError, match="bfloat16 tensor must be stored as uint16"):
        encode_frame({"x": np.zeros(2, np.float32)}, {"x": DType.BFLOAT16})
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        encode_frame({"x": np.array(["a"], dtype=object)})
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        encode_frame({"x": np.zeros(2, np.complex64)})


# --- zero copy -------------------------------------------------------------------------------


def test_decoded_arrays_are_read_only_views_on_the_body() -> None:
    body = encode_frame({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                         "b": np.arange(3, dtype=np.int64)})
    whole = np.frombuffer(body, np.uint8)
    arrays, _ = decode_frame(body)
    for array in arrays.values():
        assert np.shares_memory(array, whole)
        assert array.flags.aligned and array.flags.c_contiguous
        assert not array.flags.writeable
    writable = bytearray(body)
    arrays, _ = decode_frame(memoryview(writable))
    assert np.shares_memory(arrays["a"], np.frombuffer(writable, np.uint8))


def test_a_buffer_unaligned_in_memory_is_copied_not_refused() -> None:
    body = encode_frame({"f": np.arange(4, dtype=np.float64), "u": np.arange(4, dtype=np.uint8)})
    shifted = memoryview(b"\0" + body)[1:]  # every buffer now sits at an odd address
    arrays, _ = decode_frame(shifted)
    assert_same(arrays["f"], np.arange(4, dtype=np.float64))
    assert arrays["f"].flags.aligned
    assert not np.shares_memory(arrays["f"], np.frombuffer(shifted, np.uint8))
    assert np.shares_memory(arrays["u"], np.frombuffer(shifted, np.uint8))  # bytes: no copy


def test_unaligned_and_unordered_offsets_from_other_producers_are_accepted() -> None:
    data = b"\x07" + np.array([1.5, -2.0], np.float32).tobytes() + b"\x01\x00"
    body = frame({"tensors": [entry("b", "bool", (2,), 9, 2), entry("f", "float32", (2,), 1, 8),
                              entry("u", "uint8", (), 0, 1)]}, data)
    arrays, _ = decode_frame(body)
    assert_same(arrays["f"], np.array([1.5, -2.0], np.float32))
    assert_same(arrays["b"], np.array([True, False]))
    assert_same(arrays["u"], np.array(7, np.uint8))


# --- malformed bodies ------------------------------------------------------------------------


GOOD = entry("x", "float32", (2,), 0, 8)
DATA = np.array([1, 2], np.float32).tobytes()

MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "shorter than the 4-byte header length"),
    "three bytes": (b"\x01\x00\x00", "shorter than the 4-byte header length"),
    "header length too large": (frame({"tensors": []}, length=10_000), "header length 10000"),
    "header length 2**32-1": (frame({"tensors": []}, length=2**32 - 1), "exceeds the body"),
    "header not JSON": (frame(b"{not json"), "not valid JSON"),
    "header not UTF-8": (frame(b'{"\xff": 1}'), "not valid JSON"),
    "header not an object": (frame([GOOD]), "must be a JSON object"),
    "no tensors list": (frame({"tensor": [GOOD]}, DATA), "'tensors' list"),
    "tensors not a list": (frame({"tensors": GOOD}, DATA), "'tensors' list"),
    "entry not an object": (frame({"tensors": ["x"]}, DATA), "must be an object"),
    "no name": (frame({"tensors": [{**GOOD, "name": ""}]}, DATA), "non-empty string 'name'"),
    "name not a string": (frame({"tensors": [{**GOOD, "name": 3}]}, DATA), "'name'"),
    "unknown dtype": (frame({"tensors": [{**GOOD, "dtype": "float128"}]}, DATA),
                      "unknown dtype 'float128'"),
    "dtype not a string": (frame({"tensors": [{**GOOD, "dtype": ["float32"]}]}, DATA),
                           "unknown dtype"),
    "no dtype": (frame({"tensors": [{k: v for k, v in GOOD.items() if k != "dtype"}]}, DATA),
                 "unknown dtype None"),
    "shape not a list": (frame({"tensors": [{**GOOD, "shape": 2}]}, DATA), "'shape'"),
    "negative dim": (frame({"tensors": [{**GOOD, "shape": [-2]}]}, DATA), "'shape'"),
    "bool dim": (frame({"tensors": [{**GOOD, "shape": [True, 2]}]}, DATA), "'shape'"),
    "float dim": (frame({"tensors": [{**GOOD, "shape": [2.0]}]}, DATA), "'shape'"),
    "too many dims": (frame({"tensors": [{**GOOD, "shape": [1] * 33}]}, DATA), "'shape'"),
    "negative offset": (frame({"tensors": [{**GOOD, "offset": -1}]}, DATA), "'offset'"),
    "string offset": (frame({"tensors": [{**GOOD, "offset": "0"}]}, DATA), "'offset'"),
    "no nbytes": (frame({"tensors": [{k: v for k, v in GOOD.items() if k != "nbytes"}]}, DATA),
                  "'nbytes'"),
    "offset beyond the end": (frame({"tensors": [{**GOOD, "offset": 4}]}, DATA),
                              "bytes [4, 12) lie beyond the data region of 8 bytes"),
    "truncated data": (frame({"tensors": [GOOD]}, DATA[:7]), "beyond the data region of 7"),
    "nbytes too small": (frame({"tensors": [{**GOOD, "nbytes": 4}]}, DATA),
                         "nbytes 4 does not match shape [2] of float32 (8 bytes)"),
    "nbytes too large": (frame({"tensors": [{**GOOD, "nbytes": 16}]}, DATA * 2),
                         "nbytes 16 does not match"),
    "huge shape": (frame({"tensors": [{**GOOD, "shape": [2**40, 2**40]}]}, DATA),
                   "does not match"),
    "duplicate names": (frame({"tensors": [GOOD, {**GOOD, "offset": 8}]}, DATA * 2),
                        "duplicate tensor name 'x'"),
    "overlapping buffers": (frame({"tensors": [GOOD, {**GOOD, "name": "y", "offset": 4}]},
                                  DATA * 2), "tensors 'x' and 'y' overlap"),
    "bool bytes other than 0/1": (frame({"tensors": [entry("m", "bool", (2,), 0, 2)]},
                                        b"\x01\x02"), "bool bytes must be 0 or 1"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bodies_are_invalid_input(case: str) -> None:
    body, message = MALFORMED[case]
    with pytest.raises(InvalidInput, match="Malformed tensor message") as info:
        decode_frame(body)
    assert message in str(info.value)


def test_empty_tensors_may_share_an_offset() -> None:
    body = frame({"tensors": [entry("a", shape=(0,), nbytes=0), entry("b", shape=(0, 2),
                                                                      nbytes=0), GOOD]}, DATA)
    arrays, _ = decode_frame(body)
    assert arrays["a"].shape == (0,) and arrays["b"].shape == (0, 2)


def test_every_truncation_and_corruption_is_invalid_input_or_decodes() -> None:
    body = encode_frame({"x": np.arange(6, dtype=np.float32).reshape(2, 3),
                         "m": np.array([True, False]), "b": np.arange(4, dtype=np.uint16)},
                        {"b": DType.BFLOAT16}, extra={"k": [1, 2]})
    for end in range(len(body)):
        with pytest.raises(InvalidInput):
            decode_frame(body[:end])
    rng = random.Random(7)
    refused = 0
    for _ in range(3000):
        corrupt = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        try:
            decode_frame(bytes(corrupt))
        except InvalidInput:  # anything else fails the test
            refused += 1
    assert 0 < refused < 3000  # both outcomes were exercised


def test_declared_dtypes_are_checked_when_expected() -> None:
    body = encode_frame({"b": np.arange(3, dtype=np.uint16)})  # uint16, not bfloat16
    with pytest.raises(InvalidInput, match="Input 'b': expected dtype bfloat16, got uint16"):
        decode_frame(body, {"b": DType.BFLOAT16})
    arrays, _ = decode_frame(body, {"b": DType.UINT16, "other": DType.BOOL})
    assert arrays["b"].dtype == np.uint16


# --- JSON bodies and request dispatch --------------------------------------------------------


SIGNATURE = Signature.model_validate({
    "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 2]},
               {"name": "h", "dtype": "bfloat16", "shape": ["batch"]},
               {"name": "mask", "dtype": "bool", "shape": ["batch", 2], "optional": True}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]},
                {"name": "z", "dtype": "int64", "shape": ["batch"]}],
})


def json_body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def test_json_body_in_the_v1_request_shape() -> None:
    x = np.array([[1, 2], [3, 4]], np.float32)
    body = json_body(inputs={"x": {"b64": base64.b64encode(x.tobytes()).decode(),
                                   "shape": [2, 2], "dtype": "float32"},
                             "h": {"data": [1.0, -2.5]},
                             "mask": {"data": [True, True, False, True], "shape": [2, 2]}},
                     outputs=["z"], timeout_ms=50, codec="base64")
    arrays, outputs = decode_json_inputs(body, SIGNATURE)
    assert_same(arrays["x"], x)
    assert_same(arrays["h"], float_to_bf16_bits([1.0, -2.5]))
    assert_same(arrays["mask"], np.array([[True, True], [False, True]]))
    assert outputs == ["z"]
    assert SIGNATURE.check_inputs(arrays) == 2


@pytest.mark.parametrize("outputs", [None, []])
def test_json_body_without_an_output_selection_means_every_output(outputs: Any) -> None:
    fields: dict[str, Any] = {"inputs": {"x": {"data": [[1, 2]]}, "h": {"data": [0.5]}}}
    if outputs is not None:
        fields["outputs"] = outputs
    assert decode_json_inputs(orjson.dumps(fields), SIGNATURE)[1] is None


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "Request body is not valid JSON"),
    (b"[1]", "Request body must be a JSON object"),
    (json_body(), "'inputs' must be an object"),
    (json_body(inputs={}), "'inputs' must be an object"),
    (json_body(inputs=[{"data": [1]}]), "'inputs' must be an object"),
    (json_body(inputs={"x": {"data": [[1, 2]]}}), "Missing required input(s): h"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1]}, "w": {"data": [1]}}),
     "Unexpected input(s): w"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1], "b64": "AA=="}}),
     "Input 'h': give exactly one of 'data' or 'b64'"),
    (json_body(inputs={"x": {"data": [[1, 2]], "dtype": "float64"}, "h": {"data": [1]}}),
     "Input 'x': expected dtype float32, got float64"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1]}}, outputs="y"),
     "'outputs' must be a list of output names"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1]}}, outputs=["y", 1]),
     "'outputs' must be a list of output names"),
])
def test_json_body_errors_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_json_inputs(body, SIGNATURE)
    assert message in str(info.value)


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
    headers = request_headers(1_700_000_000.1234, ["y", "z"], "base64")
    assert headers == {HEADER_DEADLINE: 1_700_000_000_123, HEADER_OUTPUTS: "y,z",
                       HEADER_CODEC: "base64"}
    parsed = parse_request_headers(headers)
    assert parsed == RequestHeaders(deadline=1_700_000_000.123, outputs=["y", "z"],
                                    codec="base64")
    assert request_headers(5.0) == {HEADER_DEADLINE: 5000}
    assert parse_request_headers(None) == parse_request_headers({}) == RequestHeaders()


@pytest.mark.parametrize(("headers", "expected"), [
    ({HEADER_DEADLINE: "1700000000500"}, RequestHeaders(deadline=1_700_000_000.5)),
    ({HEADER_DEADLINE: b"1700000000500"}, RequestHeaders(deadline=1_700_000_000.5)),
    ({HEADER_DEADLINE: 1.7e12}, RequestHeaders(deadline=1.7e9)),
    ({HEADER_OUTPUTS: " y , z ,"}, RequestHeaders(outputs=["y", "z"])),
    ({HEADER_OUTPUTS: ["y", b"z"]}, RequestHeaders(outputs=["y", "z"])),
    ({HEADER_OUTPUTS: ""}, RequestHeaders()),
    ({HEADER_CODEC: b"json", "x-other": 1}, RequestHeaders(codec="json")),
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
    ({HEADER_CODEC: 1}, "'inferno-codec'"),
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
    for outputs, dtypes in [({"y": np.array(["a"], dtype=object)}, None),
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
