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

A tensor may instead travel by reference (a claim check): its entry names a key of the blob
store (``"claim": "<key>"``, with ``nbytes`` and no ``offset``) whose value is its bytes, and the
data region holds none of them (common/transport/blobs.py keeps them; docs/queue-protocol.md).

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
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from common.errors import InvalidInput
from common.model.codecs import array_from_bytes, check_shape, is_count
from common.model.dtypes import DType
from common.model.strings import decode_offsets, encode_offsets

__all__ = ["Claim", "decode_frame", "encode_frame"]

Array = npt.NDArray[Any]

_ALIGN = 8
_LEN = struct.Struct("<I")
_MALFORMED = "Malformed tensor message: "
_DTYPES = {d.value: d for d in DType}

Claim = Callable[[memoryview | bytes], str | None]
"""Given a tensor's bytes, the key they are to be stored under, or ``None`` to frame them."""


def encode_frame(tensors: Mapping[str, Array], dtypes: Mapping[str, DType] | None = None,
                 extra: Mapping[str, Any] | None = None, claim: Claim | None = None) -> bytes:
    """One tensor body: ``tensors`` in order, ``extra`` as further header keys; ``claim``
    takes the tensors to send by reference (it keeps their bytes for the store).

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
            raw: memoryview | bytes = encode_offsets(array, f"tensor '{name}'")
        else:
            if array.dtype != dtype.numpy:
                if array.dtype.newbyteorder("<") != dtype.numpy:
                    raise ValueError(f"tensor '{name}': a {dtype.value} tensor must be stored "
                                     f"as {dtype.numpy}, got {array.dtype}")
                array = array.astype(dtype.numpy)  # big-endian: swap to the wire's byte order
            array = np.asarray(array, order="C")  # copies only when not C-contiguous; keeps 0-d
            raw = array.reshape(-1).view(np.uint8).data
        entry: dict[str, Any] = {"name": name, "dtype": dtype.value, "shape": list(array.shape),
                                 "nbytes": len(raw)}
        entries.append(entry)
        key = claim(raw) if claim is not None else None
        if key is not None:
            entry["claim"] = key
            continue
        entry["offset"] = offset
        buffers.append(raw)
        pad = -len(raw) % _ALIGN
        if pad:
            buffers.append(b"\0" * pad)
        offset += len(raw) + pad
    header_keys: dict[str, Any] = {"tensors": entries}
    if extra:
        if "tensors" in extra:
            raise ValueError("'tensors' is reserved in a frame header")
        header_keys.update(extra)
    header = orjson.dumps(header_keys)
    header += b" " * (-(_LEN.size + len(header)) % _ALIGN)
    return b"".join([_LEN.pack(len(header)), header, *buffers])


def decode_frame(body: bytes | bytearray | memoryview,
                 dtypes: Mapping[str, DType] | None = None,
                 blobs: Mapping[str, bytes | None] | None = None
                 ) -> tuple[dict[str, Array], dict[str, Any]]:
    """The tensors of a body and the header's other keys; raises ``InvalidInput`` when malformed.

    Arrays are views on ``body`` (read-only for ``bytes``), copied only when a buffer lands
    unaligned in memory. ``bfloat16`` comes back as uint16 bit patterns. When ``dtypes`` is given
    (e.g. the signature's input types), a tensor it names must declare exactly that dtype.
    ``blobs``: what the store gave for the keys the message claims (``None``: missing); a
    tensor by reference reads its bytes there, and one whose key is not among them, absent or
    of another size is an ``InvalidInput``.
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
        claim = spec.get("claim") if isinstance(spec, dict) else None
        name, dtype, shape, offset, nbytes = _check_spec(spec, None if claim else size)
        if name in arrays:
            raise _malformed(f"duplicate tensor name '{name}'")
        if dtypes is not None and name in dtypes and dtypes[name] is not dtype:
            raise InvalidInput(
                f"Input '{name}': expected dtype {dtypes[name].value}, got {dtype.value}")
        if claim is not None:
            region = _claimed(name, claim, nbytes, blobs)
        else:
            region = view[start + offset:start + offset + nbytes]  # a view: no copy
            if nbytes:
                spans.append((offset, offset + nbytes, name))
        if dtype is DType.STRING:
            arrays[name] = decode_offsets(name, region, shape)
        else:
            arrays[name] = array_from_bytes(f"{_MALFORMED}tensor '{name}'", region, dtype,
                                            shape)
    spans.sort()
    for (_, end, first), (begin, _, second) in pairwise(spans):
        if begin < end:
            raise _malformed(f"tensors '{first}' and '{second}' overlap")
    return arrays, header


def _claimed(name: str, claim: Any, nbytes: int, blobs: Mapping[str, bytes | None] | None
             ) -> memoryview:
    if not isinstance(claim, str) or blobs is None or claim not in blobs:
        raise InvalidInput(f"Tensor '{name}' is claimed by {str(claim)[:80]!r}, which the "
                           f"message's inferno-claims header does not name")
    blob = blobs[claim]
    if blob is None:
        raise InvalidInput(f"Tensor '{name}': its claim {claim[:80]!r} is not in the store "
                           f"(it expired, was never stored, or was taken already)")
    if len(blob) != nbytes:
        raise InvalidInput(f"Tensor '{name}': its claim {claim[:80]!r} holds {len(blob)} "
                           f"bytes, not the {nbytes} its entry declares")
    return memoryview(blob)


def _check_spec(spec: Any, size: int | None) -> tuple[str, DType, list[int], int, int]:
    """``size``: the data region's, which the tensor's bytes must lie in; ``None``: they are
    claimed (no offset)."""
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
    offset, nbytes = spec.get("offset", 0 if size is None else None), spec.get("nbytes")
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
    if size is not None and offset + nbytes > size:
        raise _malformed(f"tensor '{name}': bytes [{offset}, {offset + nbytes}) lie beyond the "
                         f"data region of {size} bytes")
    return name, dtype, shape, offset, nbytes


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(f"{_MALFORMED}{detail}")
