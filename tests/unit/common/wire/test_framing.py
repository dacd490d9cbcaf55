"""The tensor framing of queue bodies (common/wire/framing.py): round trips of every dtype,
zero copy, and every way a producer can break a body (always an ``InvalidInput``, never a crash).
"""

from __future__ import annotations

import random
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from common.errors import InvalidInput
from common.model.dtypes import DType, float_to_bf16_bits
from common.wire.framing import decode_frame, encode_frame
from tests.unit.common.wire.frames import assert_same, entry, frame, header_of, sample

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
    with pytest.raises(ValueError, match="element 0 is not a str"):
        encode_frame({"x": np.array([1], dtype=object)})
    with pytest.raises(ValueError, match="string tensor must be stored as an object array"):
        encode_frame({"x": np.zeros(2, np.float32)}, {"x": DType.STRING})
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        encode_frame({"x": np.array(["a"], dtype=np.str_)})
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


# --- strings -----------------------------------------------------------------------------------


def _texts(*values: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array.reshape(shape or (len(values),))


def test_string_tensors_travel_as_offsets_and_one_blob() -> None:
    texts = _texts("a", "", "日本", "😀", shape=(2, 2))
    body = encode_frame({"t": texts, "n": np.arange(3, dtype=np.int32)})
    spec = header_of(body)["tensors"][0]
    assert spec["dtype"] == "string" and spec["shape"] == [2, 2]
    assert spec["nbytes"] == 4 * 5 + len("a日本😀".encode())
    assert header_of(body)["tensors"][1]["offset"] % 8 == 0
    arrays, _ = decode_frame(body, {"t": DType.STRING})
    assert arrays["t"].dtype == object and arrays["t"].tolist() == texts.tolist()
    assert_same(arrays["n"], np.arange(3, dtype=np.int32))


def test_empty_string_tensors() -> None:
    for shape in [(0,), (2, 0)]:
        arrays, _ = decode_frame(encode_frame({"t": _texts(*[""] * 0).reshape(shape)}))
        assert arrays["t"].shape == shape and arrays["t"].dtype == object


@pytest.mark.parametrize(("spec", "data", "expected"), [
    (entry("t", "string", (2,), 0, 11), b"\0" * 16, r"too small for shape \[2\] of string"),
    (entry("t", "string", (1,), 0, 12), b"\0" * 8, "lie beyond the data region"),
    (entry("t", "string", (1,), 0, 9), b"\0\0\0\0\2\0\0\0\xff\0\0\0", "must start at 0 and end"),
    (entry("t", "string", (1,), 0, 9), b"\0\0\0\0\1\0\0\0\xff", "element 0 is not valid UTF-8"),
    (entry("t", "string", (2,), 0, 14), b"\0\0\0\0\3\0\0\0\2\0\0\0ab",
     "offset 2 is smaller than the one before it"),
])
def test_malformed_string_tensors_are_invalid_input(spec: dict[str, Any], data: bytes,
                                                    expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        decode_frame(frame({"tensors": [spec]}, data))


def test_a_string_frame_is_decoded_without_copying_the_body() -> None:
    body = bytearray(encode_frame({"t": _texts("abc", "de")}))
    arrays, _ = decode_frame(memoryview(body))
    assert arrays["t"].tolist() == ["abc", "de"]


# --- tensors by reference (the claim check) --------------------------------------------------


def _claiming(threshold: int) -> tuple[dict[str, bytes], Any]:
    stored: dict[str, bytes] = {}

    def claim(data: memoryview | bytes) -> str | None:
        if len(data) < threshold:
            return None
        key = f"p:blob:{len(stored)}"
        stored[key] = bytes(data)
        return key

    return stored, claim


@pytest.mark.parametrize("dtype", [DType.FLOAT32, DType.BFLOAT16, DType.STRING, DType.BOOL])
def test_a_claimed_tensor_leaves_the_body_and_round_trips_from_the_store(dtype: DType) -> None:
    small, large = sample(dtype), np.concatenate([sample(dtype)] * 64)
    stored, claim = _claiming(threshold=len(encode_frame({"t": small}, {"t": dtype})))
    body = encode_frame({"small": small, "large": large}, {"small": dtype, "large": dtype},
                        claim=claim)
    entries = {e["name"]: e for e in header_of(body)["tensors"]}
    assert "claim" not in entries["small"] and list(stored) == [entries["large"]["claim"]]
    assert "offset" not in entries["large"]
    assert len(body) < len(encode_frame({"small": small}, {"small": dtype})) + 128  # an entry
    arrays, _ = decode_frame(body, blobs=stored)
    assert_same(arrays["small"], small)
    assert_same(arrays["large"], large)


@pytest.mark.parametrize(("blobs", "why"), [
    ({}, "does not name"),
    (None, "does not name"),
    ({"p:blob:0": None}, "is not in the store"),
    ({"p:blob:0": b"\0" * 3}, "holds 3 bytes, not the 400"),
], ids=["not named", "no blobs", "missing", "wrong size"])
def test_a_claim_the_store_cannot_honour_is_invalid_input(
        blobs: dict[str, bytes | None] | None, why: str) -> None:
    _, claim = _claiming(threshold=1)
    body = encode_frame({"x": np.zeros(100, np.float32)}, claim=claim)
    with pytest.raises(InvalidInput, match=why):
        decode_frame(body, blobs=blobs)


def test_a_claimed_tensor_is_neither_copied_out_of_its_array_nor_out_of_its_blob() -> None:
    """The copies the claim check leaves: the socket writes and reads, and the batch's
    concatenation; none in the framing, either way."""
    array = np.arange(1 << 16, dtype=np.float32).reshape(4, -1)
    handed: list[memoryview | bytes] = []

    def claim(data: memoryview | bytes) -> str:
        handed.append(data)
        return "p:blob:0"

    encode_frame({"x": array}, claim=claim)
    assert np.shares_memory(np.frombuffer(handed[0], np.uint8), array)  # what the store writes
    blob = array.tobytes()  # as the store's read hands it over
    arrays, _ = decode_frame(encode_frame({"x": array}, claim=lambda _: "p:blob:0"),
                             blobs={"p:blob:0": blob})
    assert np.shares_memory(arrays["x"], np.frombuffer(blob, np.uint8))
    assert_same(arrays["x"], array)
