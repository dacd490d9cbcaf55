"""Properties of the wire format (hypothesis): what is encoded decodes to the same bits, for every
dtype and shape (scalars and 0-size dimensions included), through the tensor frame, the envelopes
and the JSON request codecs; and a truncated, garbled or oversized body is an ``InvalidInput``,
never any other exception (no IndexError, ValueError, struct.error, MemoryError, numpy error).

Bounded (``max_examples``) and derandomized, so the file runs in seconds and the same everywhere;
``INFERNO_WIRE_EXAMPLES`` searches longer.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common.errors import InvalidInput
from common.model.codecs import Codec, decode_tensor, encode_tensor
from common.model.dtypes import DType
from common.wire.envelope import (
    decode_reply_envelope,
    decode_request_envelope,
    encode_reply_envelope,
    encode_request_envelope,
)
from common.wire.framing import decode_frame, encode_frame
from common.wire.json_request import decode_json_inputs, parse_json_object
from common.wire.messages import decode_inputs, decode_reply

# ``INFERNO_WIRE_EXAMPLES`` raises the bound to search longer (CI: 100 per property).
BOUNDED = settings(max_examples=int(os.environ.get("INFERNO_WIRE_EXAMPLES", "100")),
                   derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

Array = np.ndarray[Any, Any]

names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)


@st.composite
def tensors(draw: st.DrawFn, dtype: DType | None = None,
            elements: dict[str, Any] | None = None) -> tuple[DType, Array]:
    """A dtype and an array of its storage type; any bit pattern (NaNs, -0.0, subnormals)."""
    dtype = dtype or draw(st.sampled_from(list(DType)))
    if dtype is DType.STRING:  # any text, an object array of str
        elements = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
    return dtype, draw(hnp.arrays(dtype.numpy, draw(shapes), elements=elements))


def assert_same(got: Array, want: Array) -> None:
    """Equal dtype, shape and bytes: bitwise, so NaN payloads and -0.0 count."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind == "O":  # strings: equal text
        assert got.tolist() == want.tolist()
        return
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def refused_or_decoded(decode: Any, body: bytes) -> None:
    """``decode(body)`` returns, or raises ``InvalidInput``: any other exception fails the test."""
    with contextlib.suppress(InvalidInput):
        decode(body)


# --- round trips ------------------------------------------------------------------------------


@BOUNDED
@given(st.dictionaries(names, tensors(), max_size=3),
       st.dictionaries(names.filter(lambda n: n != "tensors"), json_values, max_size=3))
def test_a_frame_decodes_to_what_was_encoded(arrays: dict[str, tuple[DType, Array]],
                                             extra: dict[str, Any]) -> None:
    body = encode_frame({n: a for n, (_, a) in arrays.items()},
                        {n: d for n, (d, _) in arrays.items()}, extra=extra)
    decoded, got_extra = decode_frame(body, {n: d for n, (d, _) in arrays.items()})
    assert list(decoded) == list(arrays)
    for name, (_, array) in arrays.items():
        assert_same(decoded[name], array)
    assert got_extra == extra


@BOUNDED
@given(st.dictionaries(names, st.tuples(st.binary(max_size=40),
                                        st.dictionaries(names, json_values, max_size=3)),
                       min_size=1, max_size=4))
def test_a_request_envelope_decodes_to_its_members(members: dict[str, tuple[bytes, Any]]
                                                   ) -> None:
    body = encode_request_envelope([(cid, b, h) for cid, (b, h) in members.items()])
    decoded = decode_request_envelope(body)
    assert [(m.correlation_id, bytes(m.body), m.headers) for m in decoded] == [
        (cid, b, h) for cid, (b, h) in members.items()]


@BOUNDED
@given(st.dictionaries(names, st.tuples(st.binary(max_size=40), names), min_size=1, max_size=4))
def test_a_reply_envelope_decodes_to_its_replies(replies: dict[str, tuple[bytes, str]]) -> None:
    body = encode_reply_envelope([(cid, b, s) for cid, (b, s) in replies.items()])
    decoded = decode_reply_envelope(body)
    assert [(r.correlation_id, bytes(r.body), r.status) for r in decoded] == [
        (cid, b, s) for cid, (b, s) in replies.items()]


@BOUNDED
@given(tensors())
def test_a_base64_payload_decodes_to_the_same_bits(tensor: tuple[DType, Array]) -> None:
    dtype, array = tensor
    payload = orjson.loads(orjson.dumps(encode_tensor(array, dtype, Codec.BASE64)))
    assert_same(decode_tensor("t", payload, dtype), array)


@st.composite
def json_exact(draw: st.DrawFn) -> tuple[DType, Array]:
    """Tensors whose values JSON numbers carry exactly: no NaN or infinity (JSON has none, the
    codec writes null), bfloat16 as the float32 it widens to."""
    dtype = draw(st.sampled_from(list(DType)))
    if dtype is DType.BFLOAT16:
        widened = draw(hnp.arrays(np.float32, draw(shapes), elements=st.floats(
            allow_nan=False, allow_infinity=False, width=32)))
        bits = (widened.view(np.uint32) >> np.uint32(16)).astype(np.uint16)  # exact in bf16
        return dtype, bits
    if dtype.kind == "f":
        return draw(tensors(dtype, {"allow_nan": False, "allow_infinity": False}))
    return draw(tensors(dtype))


@BOUNDED
@given(json_exact())
def test_a_json_payload_decodes_to_the_same_values(tensor: tuple[DType, Array]) -> None:
    dtype, array = tensor
    text = orjson.dumps(encode_tensor(array, dtype, Codec.JSON), option=orjson.OPT_SERIALIZE_NUMPY)
    assert_same(decode_tensor("t", orjson.loads(text), dtype), array)


@BOUNDED
@given(json_exact())
def test_a_v1_json_body_decodes_to_its_inputs(tensor: tuple[DType, Array]) -> None:
    from common.model.signature import Signature

    dtype, array = tensor
    signature = Signature.model_validate({
        "inputs": [{"name": "t", "dtype": dtype.value, "shape": ["batch"]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})
    body = orjson.dumps({"inputs": {"t": encode_tensor(array, dtype, Codec.BASE64)},
                         "outputs": ["y"]})
    arrays, outputs = decode_json_inputs(parse_json_object(body), signature)
    assert_same(arrays["t"], array)
    assert outputs == ["y"]


# --- malformed bodies -------------------------------------------------------------------------

frames = st.dictionaries(names, tensors(), min_size=1, max_size=3).map(
    lambda arrays: encode_frame({n: a for n, (_, a) in arrays.items()},
                                {n: d for n, (d, _) in arrays.items()}, extra={"k": [1, "v"]}))
envelopes = st.lists(st.tuples(names, st.binary(max_size=24)), min_size=1, max_size=3,
                     unique_by=lambda m: m[0]).map(
    lambda members: encode_request_envelope([(c, b, {"message_id": c}) for c, b in members]))
DECODERS = {"frame": decode_frame, "request envelope": decode_request_envelope,
            "reply envelope": decode_reply_envelope}


@pytest.mark.parametrize("decoder", DECODERS)
@BOUNDED
@given(body=frames | envelopes)
def test_every_truncation_is_refused_or_decoded(decoder: str, body: bytes) -> None:
    for length in range(len(body)):
        refused_or_decoded(DECODERS[decoder], body[:length])


@pytest.mark.parametrize("decoder", DECODERS)
@BOUNDED
@given(body=frames | envelopes, flips=st.lists(
    st.tuples(st.integers(0, 2**16), st.integers(1, 255)), min_size=1, max_size=6))
def test_garbled_bytes_are_refused_or_decoded(decoder: str, body: bytes,
                                              flips: list[tuple[int, int]]) -> None:
    garbled = bytearray(body)
    for position, mask in flips:
        garbled[position % len(garbled)] ^= mask
    refused_or_decoded(DECODERS[decoder], bytes(garbled))


@BOUNDED
@given(body=frames, extra=st.integers(1, 2**32 - 1))
def test_a_header_length_past_the_end_is_refused(body: bytes, extra: int) -> None:
    length = min(len(body) - 4 + extra, 2**32 - 1)
    with pytest.raises(InvalidInput):
        decode_frame(struct.pack("<I", length) + body[4:])


# Shapes and byte counts a hostile producer may declare: far past the body, past what numpy can
# hold (even with a 0 dimension: [0, 2**70]), negative, not integers. (json, not orjson, writes
# the header: orjson cannot write integers past 64 bits, and a producer's library may.)
hostile_dims = (st.integers(0, 4) | st.integers(2**31, 2**80) | st.integers(-5, -1)
                | st.sampled_from([True, 1.5, "2", None]))


@BOUNDED
@given(dtype=st.sampled_from([d.value for d in DType]),
       shape=st.lists(hostile_dims, max_size=5),
       offset=hostile_dims, nbytes=hostile_dims | st.integers(2**62, 2**64),
       data=st.binary(max_size=64))
def test_a_declared_tensor_past_the_body_is_refused(dtype: str, shape: list[Any], offset: Any,
                                                    nbytes: Any, data: bytes) -> None:
    header = json.dumps({"tensors": [{"name": "x", "dtype": dtype, "shape": shape,
                                      "offset": offset, "nbytes": nbytes}]}).encode()
    refused_or_decoded(decode_frame, struct.pack("<I", len(header)) + header + data)


@BOUNDED
@given(shape=st.lists(st.integers(0, 2**80), min_size=1, max_size=4).map(lambda s: [0, *s]),
       dtype=st.sampled_from(list(DType)))
def test_an_empty_tensor_of_impossible_shape_is_refused(shape: list[int], dtype: DType) -> None:
    header = json.dumps({"tensors": [{"name": "x", "dtype": dtype.value, "shape": shape,
                                      "offset": 0, "nbytes": 0}]}).encode()
    refused_or_decoded(decode_frame, struct.pack("<I", len(header)) + header)
    refused_or_decoded(lambda b: decode_tensor("x", {"b64": "", "shape": shape}, dtype), b"")


@BOUNDED
@given(body=st.binary(max_size=64) | frames, status=st.sampled_from(["ok", "invalid_input", ""]))
def test_a_reply_never_raises(body: bytes, status: str) -> None:
    assert decode_reply(body, status) is not None


def _signature(dtype: DType) -> Any:
    from common.model.signature import Signature

    return Signature.model_validate({
        "inputs": [{"name": "t", "dtype": dtype.value, "shape": ["batch", "n"]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})


payload_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=4)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3), max_leaves=10)
payloads = st.fixed_dictionaries({}, optional={
    "data": payload_values, "b64": st.text(max_size=12) | payload_values,
    "base64": st.sampled_from(["AAAA", "", "==", "AQ=="]),
    "shape": st.lists(st.integers(-1, 3) | st.just(2**64), max_size=3) | payload_values,
    "dtype": st.sampled_from([d.value for d in DType]) | payload_values}) | payload_values


@BOUNDED
@given(dtype=st.sampled_from(list(DType)), payload=payloads,
       outputs=st.none() | payload_values)
def test_a_hostile_json_body_is_invalid_input(dtype: DType, payload: Any, outputs: Any) -> None:
    body = json.dumps({"inputs": {"t": payload}, "outputs": outputs}).encode()
    refused_or_decoded(lambda b: decode_json_inputs(parse_json_object(b), _signature(dtype)), body)


@BOUNDED
@given(body=st.binary(max_size=64) | frames, content_type=st.sampled_from([
    "application/x-inferno-tensors", "application/json", "text/plain", None]))
def test_a_hostile_queue_body_is_invalid_input(body: bytes, content_type: str | None) -> None:
    refused_or_decoded(lambda b: decode_inputs(b, content_type, _signature(DType.FLOAT32)), body)
