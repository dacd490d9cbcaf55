"""The one bytes-to-array decoder (common/model/codecs.py) and the protocols that use it: every
one refuses what another refuses (issue 22: v1 ``b64`` took bool bytes of 2..255)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from common.errors import InvalidInput
from common.model.codecs import MAX_DIMS, array_from_bytes, check_shape, decode_tensor
from common.model.dtypes import DType
from common.wire.framing import decode_frame, encode_frame


def test_bytes_become_a_view_of_the_dtype_and_shape() -> None:
    raw = np.arange(6, dtype=np.float32).tobytes()
    array = array_from_bytes("Input 'x'", raw, DType.FLOAT32, [2, 3])
    assert array.shape == (2, 3) and array.base is not None  # a view, not a copy
    np.testing.assert_array_equal(array.ravel(), np.arange(6))


def test_unaligned_bytes_are_copied_into_an_aligned_array() -> None:
    raw = memoryview(b"\x00" + np.arange(4, dtype=np.float64).tobytes())[1:]
    array = array_from_bytes("Input 'x'", raw, DType.FLOAT64, [4])
    assert array.flags.aligned
    np.testing.assert_array_equal(array, np.arange(4))


@pytest.mark.parametrize("byte", [2, 127, 255])
def test_a_bool_byte_other_than_0_or_1_is_refused_naming_the_input(byte: int) -> None:
    with pytest.raises(InvalidInput, match="Input 'mask': bool bytes must be 0 or 1"):
        array_from_bytes("Input 'mask'", bytes([1, byte]), DType.BOOL, [1, 2])


def test_a_byte_count_that_is_not_the_shapes_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"shape \[2\] of int32 needs 8 bytes, got 6"):
        array_from_bytes("Input 'x'", b"\x00" * 6, DType.INT32, [2])


def test_every_protocol_refuses_bool_bytes_of_2() -> None:
    payload = {"b64": base64.b64encode(b"\x01\x02").decode(), "shape": [1, 2]}
    with pytest.raises(InvalidInput, match="Input 'mask': bool bytes must be 0 or 1"):
        decode_tensor("mask", payload, DType.BOOL)  # v1 and JSON producers
    frame = encode_frame({"mask": np.frombuffer(b"\x01\x02", np.bool_).reshape(1, 2)})
    with pytest.raises(InvalidInput, match="tensor 'mask': bool bytes must be 0 or 1"):
        decode_frame(frame)  # queue messages; v2's binary extension: tests/integration


@pytest.mark.parametrize("shape", [None, "2", [1.0], [-1], [True]])
def test_a_shape_that_is_not_a_list_of_counts_is_refused(shape: object) -> None:
    with pytest.raises(InvalidInput, match="Input 'x': 'shape' must be a list of non-negative"):
        check_shape("Input 'x'", shape)


def test_a_shape_of_more_dimensions_than_numpy_takes_is_refused() -> None:
    with pytest.raises(InvalidInput, match=f"has {MAX_DIMS + 1} dimensions, at most {MAX_DIMS}"):
        check_shape("Input 'x'", [1] * (MAX_DIMS + 1))
