"""The tensor framing of queue message bodies: the public contract of docs/queue-protocol.md.

A tensor message body (content type ``application/x-inferno-tensors``), all integers
little-endian::

    0        4                 4+H (a multiple of 8)
    ┌────────┬─────────────────┬──────────┬─────┬──────────┬─────┬────
    │ u32 H  │ header JSON     │ tensor 0 │ pad │ tensor 1 │ pad │ ...
    │        │ (space-padded)  │ raw bytes│ 0-7 │ raw bytes│ 0-7 │
    └────────┴─────────────────┴──────────┴─────┴──────────┴─────┴────
                               ▲ data region: offsets count from here

    header = {"tensors": [{"name": "x", "dtype": "float32", "shape": [2, 3],
                           "offset": 0, "nbytes": 24}, ...],
              ...any other keys: the frame's "extra" (unknown keys are ignored)}

Each tensor is C-contiguous, ``nbytes = itemsize(dtype) * prod(shape)``; ``bfloat16`` travels as
its 16-bit patterns. A ``string`` tensor's bytes are ``prod(shape) + 1`` uint32 offsets and then
one UTF-8 blob they index (``nbytes`` at least ``4 * (prod(shape) + 1)``; common/model/strings.py).
The encoder pads the header with spaces and each buffer with zeros so every buffer starts 8-byte
aligned; the decoder accepts any offsets (it copies only a buffer that lands unaligned in memory)
and never trusts them: every malformed body is an ``InvalidInput``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from common.errors import InvalidInput
from common.model.codecs import array_from_bytes, check_shape, is_count
from common.model.dtypes import DType
from common.model.strings import decode_offsets, encode_offsets

__all__ = ["decode_frame", "encode_frame"]

Array = npt.NDArray[Any]

_ALIGN = 8
_LEN = struct.Struct("<I")
_MALFORMED = "Malformed tensor message: "
_DTYPES = {d.value: d for d in DType}


def encode_frame(tensors: Mapping[str, Array], dtypes: Mapping[str, DType] | None = None,
                 extra: Mapping[str, Any] | None = None) -> bytes:
    """One tensor body: ``tensors`` in order, ``extra`` as further header keys.

    ``dtypes`` gives a tensor's logical type where numpy cannot tell (``bfloat16``, stored as
    uint16 bit patterns); otherwise ``DType.of(array)``. The arrays' bytes are copied once, into
    the result; a non-contiguous or big-endian array is made contiguous little-endian first.
    Raises ``TypeError`` for an unsupported numpy dtype and ``ValueError`` when an array's storage
    does not match its declared dtype (a programming error, not bad input).
    """
    entries: list[dict[str, Any]] = []
    buffers: list[memoryview | bytes] = []
    offset = 0
    for name, array in tensors.items():
        dtype = dtypes.get(name) if dtypes is not None else None
        if dtype is None:
            dtype = DType.of(array)
        if dtype is DType.STRING:
            if array.dtype.kind != "O":
                raise ValueError(f"tensor '{name}': a string tensor must be stored as an "
                                 f"object array, got {array.dtype}")
            raw = encode_offsets(array, f"tensor '{name}'")
            entries.append({"name": name, "dtype": dtype.value, "shape": list(array.shape),
                            "offset": offset, "nbytes": len(raw)})
            buffers.append(raw)
            pad = -len(raw) % _ALIGN
            if pad:
                buffers.append(b"\0" * pad)
            offset += len(raw) + pad
            continue
        if array.dtype != dtype.numpy:
            if array.dtype.newbyteorder("<") != dtype.numpy:
                raise ValueError(f"tensor '{name}': a {dtype.value} tensor must be stored as "
                                 f"{dtype.numpy}, got {array.dtype}")
            array = array.astype(dtype.numpy)  # big-endian: swap to the wire's byte order
        array = np.asarray(array, order="C")  # copies only when not C-contiguous; keeps 0-d
        entries.append({"name": name, "dtype": dtype.value, "shape": list(array.shape),
                        "offset": offset, "nbytes": array.nbytes})
        buffers.append(array.reshape(-1).view(np.uint8).data)
        pad = -array.nbytes % _ALIGN
        if pad:
            buffers.append(b"\0" * pad)
        offset += array.nbytes + pad
    header_keys: dict[str, Any] = {"tensors": entries}
    if extra:
        if "tensors" in extra:
            raise ValueError("'tensors' is reserved in a frame header")
        header_keys.update(extra)
    header = orjson.dumps(header_keys)
    header += b" " * (-(_LEN.size + len(header)) % _ALIGN)
    return b"".join([_LEN.pack(len(header)), header, *buffers])


def decode_frame(body: bytes | bytearray | memoryview,
                 dtypes: Mapping[str, DType] | None = None
                 ) -> tuple[dict[str, Array], dict[str, Any]]:
    """The tensors of a body and the header's other keys; raises ``InvalidInput`` when malformed.

    Arrays are views on ``body`` (read-only for ``bytes``), copied only when a buffer lands
    unaligned in memory. ``bfloat16`` comes back as uint16 bit patterns. When ``dtypes`` is given
    (e.g. the signature's input types), a tensor it names must declare exactly that dtype.
    """
    view = memoryview(body).cast("B")  # any bytes-like object, addressed byte by byte
    if len(view) < _LEN.size:
        raise _malformed(f"body of {len(view)} bytes is shorter than the 4-byte header length")
    (header_len,) = _LEN.unpack_from(view)
    start = _LEN.size + header_len
    if start > len(view):
        raise _malformed(f"header length {header_len} exceeds the body "
                         f"({len(view) - _LEN.size} bytes after the length)")
    try:
        header = orjson.loads(view[_LEN.size:start])
    except orjson.JSONDecodeError as exc:
        raise _malformed(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _malformed("header must be a JSON object")
    specs = header.pop("tensors", None)
    if not isinstance(specs, list):
        raise _malformed("header must have a 'tensors' list")
    size = len(view) - start
    arrays: dict[str, Array] = {}
    spans: list[tuple[int, int, str]] = []
    for spec in specs:
        name, dtype, shape, offset, nbytes = _check_spec(spec, size)
        if name in arrays:
            raise _malformed(f"duplicate tensor name '{name}'")
        if dtypes is not None and name in dtypes and dtypes[name] is not dtype:
            raise InvalidInput(
                f"Input '{name}': expected dtype {dtypes[name].value}, got {dtype.value}")
        if dtype is DType.STRING:
            region = view[start + offset:start + offset + nbytes]  # a view: no copy
            arrays[name] = decode_offsets(name, region, shape)
            if nbytes:
                spans.append((offset, offset + nbytes, name))
            continue
        arrays[name] = array_from_bytes(f"{_MALFORMED}tensor '{name}'",
                                        view[start + offset:start + offset + nbytes], dtype, shape)
        if nbytes:
            spans.append((offset, offset + nbytes, name))
    spans.sort()
    for (_, end, first), (begin, _, second) in pairwise(spans):
        if begin < end:
            raise _malformed(f"tensors '{first}' and '{second}' overlap")
    return arrays, header


def _check_spec(spec: Any, size: int) -> tuple[str, DType, list[int], int, int]:
    if not isinstance(spec, dict):
        raise _malformed("each entry of 'tensors' must be an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise _malformed("each tensor needs a non-empty string 'name'")
    raw_dtype = spec.get("dtype")
    dtype = _DTYPES.get(raw_dtype) if isinstance(raw_dtype, str) else None
    if dtype is None:
        raise _malformed(f"tensor '{name}': unknown dtype {raw_dtype!r}; use one of: "
                         f"{', '.join(_DTYPES)}")
    shape = check_shape(f"{_MALFORMED}tensor '{name}'", spec.get("shape"))
    offset, nbytes = spec.get("offset"), spec.get("nbytes")
    if not (is_count(offset) and is_count(nbytes)):
        raise _malformed(f"tensor '{name}': 'offset' and 'nbytes' must be non-negative integers")
    if dtype is DType.STRING:
        least = 4 * (math.prod(shape) + 1)
        if nbytes < least:
            raise _malformed(f"tensor '{name}': nbytes {nbytes} is too small for shape {shape} "
                             f"of string (at least {least} bytes of offsets)")
    elif nbytes != (expected := math.prod(shape) * dtype.numpy.itemsize):
        raise _malformed(f"tensor '{name}': nbytes {nbytes} does not match shape {shape} of "
                         f"{dtype.value} ({expected} bytes)")
    if offset + nbytes > size:
        raise _malformed(f"tensor '{name}': bytes [{offset}, {offset + nbytes}) lie beyond the "
                         f"data region of {size} bytes")
    return name, dtype, shape, offset, nbytes


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(f"{_MALFORMED}{detail}")
