"""Element types: numpy storage, kinds, and bfloat16 rounding (checked against torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.model.dtypes import DType, bf16_bits_to_float32, float_to_bf16_bits

ALL = list(DType)
KINDS = {
    "bool": "b", "uint8": "u", "uint16": "u", "uint32": "u", "uint64": "u", "int8": "i",
    "int16": "i", "int32": "i", "int64": "i", "float16": "f", "bfloat16": "f", "float32": "f",
    "float64": "f", "string": "O",
}


def torch_bf16_bits(values: np.ndarray) -> np.ndarray:
    """torch's float32 -> bfloat16 conversion (round to nearest-even) as bit patterns."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(torch.bfloat16)
    return tensor.view(torch.int16).numpy().view(np.uint16)


def test_every_dtype_is_covered() -> None:
    assert {d.value for d in ALL} == set(KINDS)


@pytest.mark.parametrize("dtype", ALL, ids=str)
def test_numpy_storage(dtype: DType) -> None:
    special = {DType.BFLOAT16: np.dtype("<u2"), DType.STRING: np.dtype(object)}
    expected = special[dtype] if dtype in special else np.dtype(dtype.value)
    assert dtype.numpy == expected
    assert dtype.numpy.byteorder in "<=|"  # little-endian (or single byte)


@pytest.mark.parametrize("dtype", ALL, ids=str)
def test_kind(dtype: DType) -> None:
    assert dtype.kind == KINDS[dtype.value]


@pytest.mark.parametrize("dtype", [d for d in ALL if d not in (DType.BFLOAT16, DType.STRING)],
                         ids=str)
def test_of_array(dtype: DType) -> None:
    assert DType.of(np.zeros(2, dtype.numpy)) is dtype
    # Byte order does not change the type.
    assert DType.of(np.zeros(2, dtype.numpy.newbyteorder(">"))) is dtype


def test_of_uint16_is_never_bfloat16() -> None:
    assert DType.of(np.zeros(1, np.uint16)) is DType.UINT16


def test_of_an_object_array_is_string() -> None:
    assert DType.of(np.array(["a", "b"], dtype=object)) is DType.STRING


@pytest.mark.parametrize("dtype", [np.complex64, np.str_, np.bytes_, "datetime64[s]"])
def test_of_unsupported_dtype(dtype: object) -> None:
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        DType.of(np.zeros(1, dtype))


def test_string_values_are_the_api_names() -> None:
    assert DType("bfloat16") is DType.BFLOAT16
    assert f"{DType.FLOAT32}" == "float32"


# --- bfloat16 ---------------------------------------------------------------------------------

ONE = 1.0
STEP = 2.0 ** -7  # bfloat16 spacing just above 1.0


@pytest.mark.parametrize(("value", "bits"), [
    (1.0, 0x3F80),
    (-2.0, 0xC000),
    (0.0, 0x0000),
    (-0.0, 0x8000),
    (ONE + STEP / 2, 0x3F80),  # halfway, 0x3F80 is even: down
    (ONE + 3 * STEP / 2, 0x3F82),  # halfway, 0x3F82 is even: up
    (ONE + STEP / 2 + 2.0 ** -20, 0x3F81),  # just above halfway: up
    (ONE + STEP / 2 - 2.0 ** -20, 0x3F80),  # just below halfway: down
    (-(ONE + STEP / 2), 0xBF80),
    (-(ONE + 3 * STEP / 2), 0xBF82),
    (float("inf"), 0x7F80),
    (float("-inf"), 0xFF80),
    (float(np.finfo(np.float32).max), 0x7F80),  # past the largest bfloat16: rounds to inf
    (3.3895313892515355e38, 0x7F7F),  # the largest bfloat16
    (float(np.finfo(np.float32).tiny), 0x0080),  # smallest normal float32 is a bfloat16
])
def test_round_to_nearest_even(value: float, bits: int) -> None:
    assert int(float_to_bf16_bits(np.float32(value))) == bits
    assert int(torch_bf16_bits(np.array([value]))[0]) == bits  # the reference agrees


@pytest.mark.parametrize("nan_bits", [0x7FC00000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0xFF800001,
                                      0x7FBFFFFF, 0x7F808000])
def test_nan_stays_nan(nan_bits: int) -> None:
    value = np.array([nan_bits], np.uint32).view(np.float32)
    bits = int(float_to_bf16_bits(value)[0])
    assert bits & 0x7F80 == 0x7F80 and bits & 0x007F, hex(bits)  # exponent all ones, mantissa != 0
    assert np.isnan(bf16_bits_to_float32(np.array([bits], np.uint16))[0])


def test_rounding_matches_torch_on_random_bit_patterns() -> None:
    rng = np.random.default_rng(1234)
    patterns = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    # Plus every pattern near the rounding boundaries, and subnormals.
    low = np.arange(0, 2**17, dtype=np.uint32)
    patterns = np.concatenate([patterns, low, low | np.uint32(0x3F800000),
                               low | np.uint32(0xBF7F0000)])
    values = patterns.view(np.float32)
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(float_to_bf16_bits(values[finite]),
                                  torch_bf16_bits(values[finite]))


def test_widening_is_exact_for_every_bit_pattern() -> None:
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    widened = bf16_bits_to_float32(bits)
    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened.view(np.uint32), bits.astype(np.uint32) << 16)
    reference = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(widened.view(np.uint32), reference.view(np.uint32))


def test_widen_then_round_is_the_identity_except_for_nan() -> None:
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    widened = bf16_bits_to_float32(bits)
    keep = ~np.isnan(widened)
    np.testing.assert_array_equal(float_to_bf16_bits(widened[keep]), bits[keep])


def test_shapes_and_python_inputs() -> None:
    out = float_to_bf16_bits([[1.0, 2.0], [3.0, -4.0]])
    assert out.dtype == np.uint16 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[0x3F80, 0x4000], [0x4040, 0xC080]])
    assert bf16_bits_to_float32(out).shape == (2, 2)
