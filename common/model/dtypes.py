"""Tensor element types: the names the API speaks and how numpy stores them.

numpy has no bfloat16, so a ``bfloat16`` tensor travels as its raw 16-bit patterns in a ``uint16``
array; the runtime reinterprets those bits as ``torch.bfloat16`` without a copy. JSON payloads
carry bfloat16 as ordinary numbers, rounded to nearest-even on the way in and widened exactly to
float32 on the way out.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = ["DType", "bf16_bits_to_float32", "float_to_bf16_bits"]


class DType(StrEnum):
    BOOL = "bool"
    UINT8 = "uint8"
    UINT16 = "uint16"
    UINT32 = "uint32"
    UINT64 = "uint64"
    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    """UTF-8 text (the v2 protocol's ``BYTES``): a numpy object array of ``str``, see
    common/model/strings.py."""

    @property
    def is_string(self) -> bool:
        return self is DType.STRING

    @property
    def numpy(self) -> np.dtype[np.generic]:
        """The little-endian numpy dtype that holds this type's bytes."""
        return _NUMPY[self]

    @property
    def kind(self) -> str:
        """numpy kind letter of the *logical* type: 'b', 'u', 'i', 'f' (bfloat16 is 'f') or 'O'
        (string)."""
        return "f" if self is DType.BFLOAT16 else self.numpy.kind

    @classmethod
    def of(cls, array: npt.NDArray[np.generic]) -> DType:
        """The DType of a numpy array; a uint16 array is taken as uint16, never bfloat16."""
        try:
            if array.dtype.kind == "O":
                return DType.STRING
            return _BY_NUMPY[array.dtype.newbyteorder("<")]
        except KeyError:
            raise TypeError(f"unsupported numpy dtype {array.dtype}") from None


def _storage(d: DType) -> np.dtype[np.generic]:
    if d is DType.BFLOAT16:
        return np.dtype("<u2")
    if d is DType.STRING:
        return np.dtype(object)
    return np.dtype(d.value).newbyteorder("<")


_NUMPY: dict[DType, np.dtype[np.generic]] = {d: _storage(d) for d in DType}
_BY_NUMPY = {dt: d for d, dt in _NUMPY.items() if d not in (DType.BFLOAT16, DType.STRING)}


def float_to_bf16_bits(values: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """Round float values to bfloat16 (nearest-even) and return the bit patterns."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    rounded = (bits + rounding) >> np.uint32(16)
    # NaN must stay NaN: rounding could carry a NaN's payload into the exponent.
    rounded = np.where(np.isnan(bits.view(np.float32)), np.uint32(0x7FC0), rounded)
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Widen bfloat16 bit patterns to float32 exactly."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
