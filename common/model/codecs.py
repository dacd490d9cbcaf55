"""Tensor payload codecs: nested-list JSON ``data``, and raw bytes (``b64``, v2's binary
extension, the queue's tensor frames) by the one bytes-to-array decoder every protocol uses.

Where raw bytes came from (base64 text, a slice of an HTTP body, a frame's data region) is the
caller's to check; from then on every protocol refuses the same things with the same words
(``check_shape``, ``array_from_bytes``).

A JSON payload is ``{"data": [...]}`` or ``{"b64": "...", "shape": [...]}`` (``base64`` is accepted
for ``b64``: the original Inferno's name for it), with optional ``dtype`` (checked against the
signature) and ``shape`` (with ``data``: checked, or used to reshape a flat row-major list).
Everything goes through numpy in C: no per-element Python loops.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInput
from common.model.dtypes import DType, bf16_bits_to_float32, float_to_bf16_bits
from common.model.strings import decode_prefixed, encode_prefixed, from_data

__all__ = ["MAX_DIMS", "Codec", "array_from_bytes", "array_from_raw", "check_shape",
           "decode_tensor", "encode_tensor", "is_count", "json_safe", "raw_of", "shaped"]

Array = npt.NDArray[Any]
MAX_DIMS = 32
"""Most dimensions a tensor may have (numpy 1.x's limit; nobody sends more)."""


def is_count(value: Any) -> TypeGuard[int]:
    """A non-negative integer (``True`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_shape(label: str, shape: Any) -> list[int]:
    """``shape`` when it is a list of at most ``MAX_DIMS`` counts; else ``InvalidInput`` for
    ``label`` (``"Input 'x'"``)."""
    if not (isinstance(shape, list) and all(is_count(d) for d in shape)):
        raise InvalidInput(f"{label}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"{label}: 'shape' has {len(shape)} dimensions, at most {MAX_DIMS}")
    return shape


def shaped(label: str, array: Array, shape: list[int]) -> Array:
    """``array`` reshaped to ``shape``; ``InvalidInput`` where numpy cannot (an empty tensor
    declared with a dimension past what an array may hold, e.g. ``[0, 2**64]``)."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise InvalidInput(f"{label}: shape {shape} is not possible ({exc})") from None


def array_from_bytes(label: str, raw: bytes | memoryview, dtype: DType,
                     shape: list[int]) -> Array:
    """The array of ``dtype`` and ``shape`` that ``raw`` holds, as a view on it (read-only for
    ``bytes``); copied only where ``raw`` lies unaligned in memory, since kernels on unaligned
    data are slower and may round differently. ``InvalidInput`` when the byte count is not the
    shape's, the shape is impossible, or a ``bool`` byte is neither 0 nor 1 (torch would read 2
    as true, numpy's comparisons as 2)."""
    expected = math.prod(shape) * dtype.numpy.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        raise InvalidInput(f"{label}: shape {shape} of {dtype.value} needs {expected} bytes, "
                           f"got {len(raw)}")
    array = shaped(label, np.frombuffer(raw, dtype.numpy), shape)
    if not array.flags.aligned:
        array = array.copy()
    if dtype is DType.BOOL and array.size and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"{label}: bool bytes must be 0 or 1")
    return array


class Codec(StrEnum):
    JSON = "json"
    BASE64 = "base64"


# Which numpy kinds inferred from JSON may be stored as a given logical kind. Ints never silently
# take floats (1.5 is not an int64), bools take only true/false.
_ACCEPTS = {"b": "b", "u": "biu", "i": "biu", "f": "biuf"}


_RAW_KEYS = ("b64", "base64")
"""The keys of a payload's raw bytes: ours, and the original Inferno's."""


def decode_tensor(name: str, payload: Any, dtype: DType) -> Array:
    """Decode one input payload to an array of ``dtype`` (the signature's type)."""
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"Input '{name}': expected an object with 'data' or 'b64'")
    declared = payload.get("dtype")
    if declared is not None and declared != dtype.value:
        raise InvalidInput(f"Input '{name}': expected dtype {dtype.value}, got {declared}")
    shape = payload.get("shape")
    if shape is not None:
        check_shape(f"Input '{name}'", shape)
    given = [k for k in ("data", *_RAW_KEYS) if k in payload]
    if len(given) != 1:
        got = f", got {' and '.join(given)}" if given else ""
        raise InvalidInput(f"Input '{name}': give exactly one of 'data' or 'b64' ('base64' is "
                           f"the same as 'b64'){got}")
    if dtype is DType.STRING:
        if given[0] != "data":
            raise InvalidInput(f"Input '{name}': a string input takes 'data' (a list of "
                               f"strings), not '{given[0]}'")
        return from_data(name, payload["data"], shape)
    if given[0] != "data":
        return _from_b64(name, given[0], payload[given[0]], shape, dtype)
    return _from_data(name, payload["data"], shape, dtype)


def _from_b64(name: str, key: str, text: Any, shape: list[int] | None, dtype: DType) -> Array:
    if shape is None:
        raise InvalidInput(f"Input '{name}': 'shape' is required with '{key}'")
    if not isinstance(text, str):
        raise InvalidInput(f"Input '{name}': '{key}' must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"Input '{name}': invalid base64 ({exc})") from exc
    return array_from_bytes(f"Input '{name}'", raw, dtype, shape)


def _from_data(name: str, data: Any, shape: list[int] | None, dtype: DType) -> Array:
    try:
        inferred = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidInput(f"Input '{name}': 'data' is not a rectangular array ({exc})") from exc
    exact = _big_ints(data, inferred) if dtype.kind in "iu" and inferred.dtype.kind == "f" else None
    if exact is not None:
        inferred = exact
    elif inferred.size and inferred.dtype.kind not in _ACCEPTS[dtype.kind]:
        raise InvalidInput(
            f"Input '{name}': expected dtype {dtype.value}, got {_describe_kind(inferred)} data"
        )
    if shape is not None and list(inferred.shape) != shape:
        # A flat list, or an empty one: nested lists cannot say [2, 0, 3], only [[], []].
        if (inferred.ndim == 1 or inferred.size == 0) and inferred.size == math.prod(shape):
            inferred = shaped(f"Input '{name}'", inferred, shape)
        else:
            raise InvalidInput(
                f"Input '{name}': 'shape' {shape} does not match the data's shape "
                f"{list(inferred.shape)}"
            )
    if dtype is DType.BFLOAT16:
        return float_to_bf16_bits(inferred)
    target = dtype.numpy
    if target.kind in "iu" and inferred.size and inferred.dtype.kind in "iuO":
        info = np.iinfo(target)  # type: ignore[type-var]
        if inferred.min() < info.min or inferred.max() > info.max:
            raise InvalidInput(
                f"Input '{name}': values out of range for {dtype.value} "
                f"[{info.min}, {info.max}]"
            )
    return inferred.astype(target, copy=False)


def _big_ints(data: Any, inferred: Array) -> Array | None:
    """Integers past int64 (uint64's upper half) make numpy infer float64: re-read them exactly
    (an object array of Python ints), or ``None`` when the data really holds floats.

    Only on that rare path does this look at each element.
    """
    exact = np.asarray(data, dtype=object)
    if exact.shape == inferred.shape and all(type(v) is int for v in exact.flat):
        return exact
    return None


def _describe_kind(array: Array) -> str:
    return {"b": "bool", "i": "integer", "u": "integer", "f": "float"}.get(
        array.dtype.kind, "non-numeric"
    )


def array_from_raw(name: str, raw: bytes | memoryview, dtype: DType, shape: list[int]) -> Array:
    """Input ``name`` from its bytes as the Open Inference Protocol lays them out (the v2 binary
    extension, gRPC's ``raw_input_contents``, a shared memory region): ``BYTES`` as Triton's
    length-prefixed elements, any other dtype its elements in C order (``array_from_bytes``)."""
    if dtype is DType.STRING:
        return decode_prefixed(name, memoryview(raw), shape)
    return array_from_bytes(f"Input '{name}'", raw, dtype, shape)


def raw_of(array: Array, dtype: DType, what: str) -> bytes | memoryview:
    """``array``'s bytes in that layout (``what`` names it in an error): ``array_from_raw``'s
    inverse."""
    if dtype is DType.STRING:
        return encode_prefixed(array, what)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def json_safe(array: Array, dtype: DType) -> Any:
    """The array as orjson can write it: bfloat16 bits widened to float32 numbers, strings as
    (nested) lists (orjson cannot write object arrays)."""
    if dtype is DType.STRING:
        return array.tolist()
    if dtype is DType.BFLOAT16:
        return bf16_bits_to_float32(array)
    return np.ascontiguousarray(array)


def encode_tensor(array: Array, dtype: DType, codec: Codec) -> dict[str, Any]:
    """One output payload; the array itself is left for orjson (OPT_SERIALIZE_NUMPY) to write."""
    out: dict[str, Any] = {"dtype": dtype.value, "shape": list(array.shape)}
    if codec is Codec.BASE64 and dtype is not DType.STRING:  # strings: always 'data'
        out["b64"] = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")
    else:
        out["data"] = json_safe(array, dtype)
    return out
