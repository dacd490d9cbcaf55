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
from common.model.codecs import MAX_DIMS, Codec, decode_tensor, encode_tensor, is_count
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


@st.composite
def past_the_body(draw: st.DrawFn) -> tuple[Any, Any, bytes]:
    """A tensor's ``offset`` and ``nbytes`` and the data region they point into, never fitting:
    one of them not a count, or ``offset + nbytes`` past the region's end."""
    data = draw(st.binary(max_size=64))
    offset = draw(hostile_dims)
    nbytes = draw(hostile_dims | st.integers(2**62, 2**64))
    if is_count(offset) and is_count(nbytes) and offset + nbytes <= len(data):
        nbytes = len(data) - offset + draw(st.integers(1, 2**64))
    return offset, nbytes, data


@BOUNDED
@given(dtype=st.sampled_from([d.value for d in DType]),
       shape=st.lists(hostile_dims, max_size=5), tensor=past_the_body())
def test_a_declared_tensor_past_the_body_is_refused(dtype: str, shape: list[Any],
                                                    tensor: tuple[Any, Any, bytes]) -> None:
    offset, nbytes, data = tensor
    header = json.dumps({"tensors": [{"name": "x", "dtype": dtype, "shape": shape,
                                      "offset": offset, "nbytes": nbytes}]}).encode()
    with pytest.raises(InvalidInput):
        decode_frame(struct.pack("<I", len(header)) + header + data)


@st.composite
def impossible_shapes(draw: st.DrawFn) -> list[int]:
    """``[0, ...]`` with a dimension past numpy's largest (2**63 - 1) somewhere: 0 elements, and
    still no array has that shape."""
    dims = draw(st.lists(st.integers(0, 2**80), max_size=3))
    dims.insert(draw(st.integers(0, len(dims))), draw(st.integers(2**63, 2**80)))
    return [0, *dims]


@BOUNDED
@given(shape=impossible_shapes(), dtype=st.sampled_from(list(DType)))
def test_an_empty_tensor_of_impossible_shape_is_refused(shape: list[int], dtype: DType) -> None:
    header = json.dumps({"tensors": [{"name": "x", "dtype": dtype.value, "shape": shape,
                                      "offset": 0, "nbytes": 0}]}).encode()
    with pytest.raises(InvalidInput):
        decode_frame(struct.pack("<I", len(header)) + header)
    with pytest.raises(InvalidInput):
        decode_tensor("x", {"b64": "", "shape": shape}, dtype)


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


# What a v1 body may not hold, whatever else it holds (common/wire/json_request.py): each is
# refused on its own.
_SOURCES = ("data", "b64", "base64")
not_counts = st.integers(-2**70, -1) | st.booleans() | st.floats() | st.text(max_size=3) | st.none()
bad_shapes = (
    st.tuples(st.lists(st.integers(0, 3), max_size=3), not_counts,
              st.lists(st.integers(0, 3), max_size=2)).map(lambda t: [*t[0], t[1], *t[2]])
    | st.lists(st.integers(0, 1), min_size=MAX_DIMS + 1, max_size=MAX_DIMS + 2)
    | st.booleans() | st.integers() | st.text(max_size=4)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
bad_outputs = (
    st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4)
    | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2)
    | st.tuples(st.lists(st.text(max_size=3), max_size=2),  # a list with one non-name in it
                st.none() | st.integers() | st.booleans() | st.lists(st.text(max_size=2)),
                ).map(lambda t: [*t[0], t[1]]))


@st.composite
def hostile_json_bodies(draw: st.DrawFn) -> tuple[DType, bytes]:
    """The signature's dtype of input 't' and a v1 body for it with at least one defect: its
    payload is not an object, declares another dtype, has a shape that is not a list of at most
    ``MAX_DIMS`` counts, or has not exactly one of 'data', 'b64' and 'base64'; or 'outputs' is
    not a list of names. The rest of the body is arbitrary."""
    dtype = draw(st.sampled_from(list(DType)))
    payload, outputs = draw(payloads), draw(st.none() | payload_values)
    defect = draw(st.sampled_from(["not an object", "dtype", "shape", "sources", "outputs"]))
    if defect == "not an object":
        payload = draw(payload_values)  # null, a boolean, a number, a string or a list
    elif defect == "outputs":
        outputs = draw(bad_outputs)
    else:
        payload = dict(payload) if isinstance(payload, dict) else {}
        if defect == "dtype":
            payload["dtype"] = draw(st.sampled_from([d.value for d in DType if d is not dtype])
                                    | st.integers() | st.booleans())
        elif defect == "shape":
            payload["shape"] = draw(bad_shapes)
        else:
            given = draw(st.sampled_from([(), ("data", "b64"), ("data", "base64"),
                                          ("b64", "base64"), _SOURCES]))
            payload = {k: v for k, v in payload.items() if k not in _SOURCES}
            payload.update({k: draw(payload_values) for k in given})
    return dtype, json.dumps({"inputs": {"t": payload}, "outputs": outputs}).encode()


@BOUNDED
@given(body=hostile_json_bodies())
def test_a_hostile_json_body_is_invalid_input(body: tuple[DType, bytes]) -> None:
    dtype, raw = body
    with pytest.raises(InvalidInput):
        decode_json_inputs(parse_json_object(raw), _signature(dtype))


def _never_names_t(body: bytes) -> bool:
    """Whether ``body`` has no JSON string "t", not even \\u-escaped: then neither a tensor
    frame's header nor a JSON body in it can name the signature's required input 't'."""
    return b'"t"' not in body and b"\\u" not in body


@BOUNDED
@given(body=(st.binary(max_size=64) | frames).filter(_never_names_t),
       content_type=st.sampled_from([
           "application/x-inferno-tensors", "application/json", "text/plain", None]))
def test_a_hostile_queue_body_is_invalid_input(body: bytes, content_type: str | None) -> None:
    with pytest.raises(InvalidInput):
        decode_inputs(body, content_type, _signature(DType.FLOAT32))
