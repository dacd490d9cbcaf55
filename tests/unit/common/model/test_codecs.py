"""Tensor payload codecs: JSON ``data`` and raw ``b64``, every dtype, and every way to be wrong."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from common.errors import InvalidInput
from common.model.codecs import Codec, decode_tensor, encode_tensor, json_safe
from common.model.dtypes import DType, float_to_bf16_bits

NAME = "pixels"  # every error message must name the input


def sample(dtype: DType) -> np.ndarray:
    """A 2x3 array of ``dtype`` with its extremes; finite values only (JSON has no NaN)."""
    if dtype is DType.STRING:
        return np.array([["", "héllo", "日本語"], ["a\x00b", "😀", "x" * 40]], dtype=object)
    if dtype is DType.BOOL:
        return np.array([[True, False, True], [False, False, True]])
    if dtype is DType.BFLOAT16:
        return float_to_bf16_bits([[1.0, -2.5, 3.140625], [0.0, -0.0, 3.3895313892515355e38]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype.numpy)
        return np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype.numpy)
    info = np.finfo(dtype.numpy)
    return np.array([[info.min, info.max, info.tiny], [0.1, -0.0, 1.0 / 3.0]], dtype.numpy)


def over_json(payload: dict[str, Any]) -> dict[str, Any]:
    """What the client sees and sends back: the payload through orjson, as the facade writes it."""
    return orjson.loads(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind == "O":
        assert got.tolist() == want.tolist()
        return
    assert got.tobytes() == want.tobytes()


def invalid(payload: Any, dtype: DType = DType.FLOAT32) -> str:
    with pytest.raises(InvalidInput) as info:
        decode_tensor(NAME, payload, dtype)
    assert f"'{NAME}'" in info.value.message, info.value.message
    return info.value.message


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [
    pytest.param(d)
    if d is DType.UINT64 else d for d in DType], ids=str)
def test_data_round_trip(dtype: DType) -> None:
    array = sample(dtype)
    payload = over_json(encode_tensor(array, dtype, Codec.JSON))
    assert payload["dtype"] == dtype.value and payload["shape"] == [2, 3]
    assert isinstance(payload["data"], list)
    assert_same_bits(decode_tensor(NAME, payload, dtype), array.astype(dtype.numpy))


@pytest.mark.parametrize("dtype", [d for d in DType if d is not DType.STRING], ids=str)
def test_b64_round_trip(dtype: DType) -> None:
    array = sample(dtype)
    payload = over_json(encode_tensor(array, dtype, Codec.BASE64))
    assert payload["dtype"] == dtype.value and payload["shape"] == [2, 3]
    assert isinstance(payload["b64"], str) and "data" not in payload
    assert_same_bits(decode_tensor(NAME, payload, dtype), array.astype(dtype.numpy))


@pytest.mark.parametrize("dtype", [DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32, DType.FLOAT64],
                         ids=str)
def test_b64_carries_nan_and_inf(dtype: DType) -> None:
    values = [np.nan, np.inf, -np.inf]
    array = (float_to_bf16_bits(values) if dtype is DType.BFLOAT16
             else np.array(values, dtype.numpy))
    decoded = decode_tensor(NAME, encode_tensor(array, dtype, Codec.BASE64), dtype)
    assert_same_bits(decoded, array)


def test_bfloat16_data_is_written_as_exact_float32_numbers() -> None:
    bits = float_to_bf16_bits([1.0, 3.140625, -0.5])
    payload = over_json(encode_tensor(bits, DType.BFLOAT16, Codec.JSON))
    assert payload["data"] == [1.0, 3.140625, -0.5]
    np.testing.assert_array_equal(json_safe(bits, DType.BFLOAT16), [1.0, 3.140625, -0.5])


def test_bfloat16_data_is_rounded_to_nearest_even() -> None:
    decoded = decode_tensor(NAME, {"data": [1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8]}, DType.BFLOAT16)
    np.testing.assert_array_equal(decoded, [0x3F80, 0x3F82])


def test_b64_encodes_in_c_order() -> None:
    array = np.arange(6, dtype=np.int32).reshape(2, 3).T  # not C-contiguous
    payload = encode_tensor(array, DType.INT32, Codec.BASE64)
    assert payload["shape"] == [3, 2]
    np.testing.assert_array_equal(decode_tensor(NAME, payload, DType.INT32), array)


@pytest.mark.parametrize("codec", list(Codec), ids=str)
def test_empty_tensor_round_trip(codec: Codec) -> None:
    array = np.zeros((0, 3), np.float32)
    payload = over_json(encode_tensor(array, DType.FLOAT32, codec))
    assert_same_bits(decode_tensor(NAME, payload, DType.FLOAT32), array)


def test_json_numbers_take_the_signature_dtype() -> None:
    assert decode_tensor(NAME, {"data": [[1, 2]]}, DType.FLOAT32).dtype == np.float32
    assert decode_tensor(NAME, {"data": [1, 2]}, DType.UINT8).dtype == np.uint8
    assert decode_tensor(NAME, {"data": [True, False]}, DType.INT8).tolist() == [1, 0]
    assert decode_tensor(NAME, {"data": [True]}, DType.FLOAT64).tolist() == [1.0]
    assert decode_tensor(NAME, {"data": [2**64 - 1]}, DType.UINT64).tolist() == [2**64 - 1]
    assert decode_tensor(NAME, {"data": []}, DType.INT32).dtype == np.int32


def test_large_uint64_values_in_json_data() -> None:
    decoded = decode_tensor(NAME, {"data": [0, 2**64 - 1, 2**63]}, DType.UINT64)
    assert decoded.tolist() == [0, 2**64 - 1, 2**63]


def test_flat_data_is_reshaped_by_shape() -> None:
    decoded = decode_tensor(NAME, {"data": [1, 2, 3, 4, 5, 6], "shape": [2, 3]}, DType.INT16)
    assert decoded.shape == (2, 3)
    np.testing.assert_array_equal(decoded, [[1, 2, 3], [4, 5, 6]])


def test_matching_shape_and_dtype_are_accepted() -> None:
    payload = {"data": [[1.5, 2.5]], "shape": [1, 2], "dtype": "float32"}
    np.testing.assert_array_equal(decode_tensor(NAME, payload, DType.FLOAT32), [[1.5, 2.5]])


# --- refusals ----------------------------------------------------------------------------------


def test_ragged_data() -> None:
    assert "not a rectangular array" in invalid({"data": [[1, 2], [3]]})


@pytest.mark.parametrize("dtype", [DType.INT8, DType.INT32, DType.INT64, DType.UINT8,
                                   DType.UINT64], ids=str)
def test_float_data_for_an_int_dtype(dtype: DType) -> None:
    message = invalid({"data": [1, 1.5]}, dtype)
    assert f"expected dtype {dtype.value}, got float data" in message


def test_numbers_for_bool() -> None:
    assert "expected dtype bool, got integer data" in invalid({"data": [0, 1]}, DType.BOOL)


def test_non_numeric_data() -> None:
    assert "non-numeric" in invalid({"data": ["a", "b"]})
    assert "non-numeric" in invalid({"data": [None]})


@pytest.mark.parametrize(("dtype", "value"), [
    (DType.UINT8, 256), (DType.UINT8, -1), (DType.INT8, -129), (DType.INT8, 128),
    (DType.INT16, 2**15), (DType.UINT16, 2**16), (DType.INT32, -(2**31) - 1),
    (DType.UINT32, 2**32), (DType.INT64, 2**63), (DType.UINT64, -1),
], ids=lambda v: str(v))
def test_out_of_range_ints(dtype: DType, value: int) -> None:
    message = invalid({"data": [0, value]}, dtype)
    info = np.iinfo(dtype.numpy)
    assert f"values out of range for {dtype.value} [{info.min}, {info.max}]" in message


@pytest.mark.parametrize("payload", [
    {"data": [1.0], "b64": "AACAPw==", "shape": [1]},
    {"data": [1.0], "base64": "AACAPw==", "shape": [1]},
    {"b64": "AACAPw==", "base64": "AACAPw==", "shape": [1]},
    {"shape": [1]},
    {},
], ids=["both", "data-and-base64", "b64-and-base64", "neither", "empty"])
def test_exactly_one_of_data_or_b64(payload: dict[str, Any]) -> None:
    assert "exactly one of 'data' or 'b64'" in invalid(payload)


def test_base64_is_the_original_name_of_b64() -> None:
    """The original Inferno's key for raw bytes: the same decoding, the same errors."""
    as_b64 = decode_tensor("x", {"b64": "AACAPwAAAEA=", "shape": [1, 2]}, DType.FLOAT32)
    as_base64 = decode_tensor("x", {"base64": "AACAPwAAAEA=", "shape": [1, 2]}, DType.FLOAT32)
    np.testing.assert_array_equal(as_b64, as_base64)
    np.testing.assert_array_equal(as_base64, [[1.0, 2.0]])
    assert "'shape' is required with 'base64'" in invalid({"base64": "AACAPw=="})
    assert "'base64' must be a base64 string" in invalid({"base64": 5, "shape": [1]})
    assert "needs 4 bytes, got 3" in invalid({"base64": "AAAA", "shape": [1]})


def test_payload_must_be_an_object() -> None:
    assert "expected an object" in invalid([1.0, 2.0])


def test_b64_needs_a_shape() -> None:
    assert "'shape' is required" in invalid({"b64": "AACAPw=="})


def test_b64_must_be_a_string() -> None:
    assert "must be a base64 string" in invalid({"b64": [1, 2], "shape": [2]})


def test_b64_wrong_byte_count() -> None:
    text = base64.b64encode(np.zeros(3, np.float32).tobytes()).decode()
    message = invalid({"b64": text, "shape": [2, 2]})
    assert "needs 16 bytes, got 12" in message


@pytest.mark.parametrize("text", ["not base64!", "AAA", "AA=A"])
def test_invalid_base64(text: str) -> None:
    assert "invalid base64" in invalid({"b64": text, "shape": [1]})


@pytest.mark.parametrize("codec_key", ["data", "b64"])
def test_declared_dtype_must_match_the_signature(codec_key: str) -> None:
    payload = {codec_key: [1] if codec_key == "data" else "AQAAAA==", "shape": [1],
               "dtype": "int32"}
    assert "expected dtype float32, got int32" in invalid(payload)


def test_shape_mismatch() -> None:
    assert "does not match the data's shape [2, 2]" in invalid(
        {"data": [[1, 2], [3, 4]], "shape": [4, 1]})
    assert "does not match the data's shape [3]" in invalid({"data": [1, 2, 3], "shape": [2, 2]})


@pytest.mark.parametrize("shape", [[-1], "2,2", [1.5], [None], 3])
def test_shape_must_be_non_negative_integers(shape: Any) -> None:
    assert "'shape' must be a list of non-negative integers" in invalid(
        {"data": [1.0], "shape": shape})
