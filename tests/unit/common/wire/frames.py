"""Helpers of the wire tests: sample arrays of every dtype, frames built by hand."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from common.model.dtypes import DType, float_to_bf16_bits


def sample(dtype: DType, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """An array of ``dtype`` (its storage type) with varied values, extremes included."""
    count = int(np.prod(shape))
    if dtype is DType.STRING:
        texts = ["", "héllo", "日本語", "a\x00b", "😀", "x" * 40]
        values = np.empty(count, dtype=object)
        values[:] = [texts[i % len(texts)] for i in range(count)]
        return values.reshape(shape)
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
    if want.dtype.kind == "O":
        assert got.tolist() == want.tolist()
        return
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
