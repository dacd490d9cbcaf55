"""String tensors (dtype ``string``, the v2 protocol's ``BYTES``): their checks and encodings.

In process a string tensor is a numpy *object* array of Python ``str`` with the tensor's shape:
``np.concatenate`` batches it and slicing splits it by rows like any other tensor, and the Python
runtime hands a model ``array.tolist()`` (a ``list[str]`` for shape ``[batch]``). Each boundary
has its own encoding, every one length-prefixed and validated element by element, so an error
names the input and the element (its row-major index):

- JSON (v1, v2, JSON queue bodies): ``data`` is a (nested) list of strings (``from_data``);
- the queue's tensor framing: ``count + 1`` little-endian ``uint32`` offsets, then one UTF-8
  blob (``encode_offsets`` / ``decode_offsets``, docs/queue-protocol.md says why);
- Triton's binary extension: each element as a ``uint32`` little-endian length and its bytes
  (``encode_prefixed`` / ``decode_prefixed``).

Every element must be valid UTF-8 and at most the input's ``max_string_bytes`` bytes long
(``check_strings``, run by ``Signature.validate_request`` on both sides of the queue).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInput

__all__ = [
    "DEFAULT_MAX_STRING_BYTES",
    "check_strings",
    "decode_offsets",
    "decode_prefixed",
    "element",
    "encode_offsets",
    "encode_prefixed",
    "framed_nbytes",
    "from_data",
    "string_array",
]

Array = npt.NDArray[Any]

DEFAULT_MAX_STRING_BYTES = 64 * 1024
"""Default bound on one element's UTF-8 bytes (``max_string_bytes`` of a string input): a long
document fits, a request body of a few strings that size stays well under the body limit."""
_LEN = struct.Struct("<I")
_OFFSET = np.dtype("<u4")
_MAX_BLOB = 2**32 - 1


def element(index: int, shape: Sequence[int]) -> str:
    """``element 3`` (and its position, ``[1, 1]``, in a tensor of more than one dimension)."""
    if len(shape) <= 1:
        return f"element {index}"
    position = ", ".join(str(int(i)) for i in np.unravel_index(index, tuple(shape)))
    return f"element {index} ([{position}])"


def _array(items: Sequence[str], shape: Sequence[int]) -> Array:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(tuple(shape))


# --- JSON -------------------------------------------------------------------------------------


def from_data(name: str, data: Any, shape: list[int] | None) -> Array:
    """A JSON ``data`` payload of a string input as an object array; ``shape`` (optional) is
    checked, or reshapes a flat list. Every element must be a string."""
    found: list[int] = []
    level: list[Any] = [data]
    while level and all(isinstance(x, list) for x in level):
        lengths = {len(x) for x in level}
        if len(lengths) != 1:
            raise InvalidInput(f"Input '{name}': 'data' is not a rectangular array")
        found.append(lengths.pop())
        level = list(chain.from_iterable(level))
    if any(isinstance(x, list) for x in level):
        raise InvalidInput(f"Input '{name}': 'data' is not a rectangular array")
    for index, value in enumerate(level):
        if not isinstance(value, str):
            raise InvalidInput(f"Input '{name}': {element(index, found)} is not a string "
                               f"(got {_kind(value)})")
    if shape is not None and found != shape:
        # A flat list (or an empty one) takes any shape of as many elements.
        if not (len(found) == 1 or 0 in found) or len(level) != math.prod(shape):
            raise InvalidInput(f"Input '{name}': 'shape' {shape} does not match the data's "
                               f"shape {found}")
        found = shape
    return _array(level, found)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


# --- checks -----------------------------------------------------------------------------------


def check_strings(name: str, array: Array, max_bytes: int) -> None:
    """Every element a ``str`` of at most ``max_bytes`` UTF-8 bytes; ``InvalidInput`` naming the
    first element that is not."""
    quick = max_bytes // 4  # no str of this many characters has more UTF-8 bytes than allowed
    for index, value in enumerate(array.flat):
        if not isinstance(value, str):
            raise InvalidInput(f"Input '{name}': {element(index, array.shape)} is not a string "
                               f"(got {_kind(value)})")
        if len(value) > quick:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidInput(f"Input '{name}': {element(index, array.shape)} is not "
                                   f"valid UTF-8 text (a lone surrogate)") from None
            if size > max_bytes:
                raise InvalidInput(f"Input '{name}': {element(index, array.shape)} is {size} "
                                   f"bytes long; the limit is {max_bytes} (max_string_bytes)")


def string_array(value: Any, shape_of: str) -> Array:
    """What a Python model returned for a string output (a list, nested lists, a numpy array of
    ``str``) as an object array; ``TypeError`` naming ``shape_of`` for anything else."""
    array = value if isinstance(value, np.ndarray) and value.dtype == object else None
    if array is None:
        try:
            array = from_data(shape_of, value.tolist() if isinstance(value, np.ndarray)
                              else value, None)
        except InvalidInput as exc:
            raise TypeError(exc.message.replace(f"Input '{shape_of}'", f"Output '{shape_of}'",
                                                1)) from None
    for index, item in enumerate(array.flat):
        if not isinstance(item, str):
            raise TypeError(f"Output '{shape_of}': {element(index, array.shape)} is not a "
                            f"string (got {_kind(item)})")
    return array


# --- the queue framing: offsets and one blob --------------------------------------------------


def _utf8(array: Array, what: str) -> list[bytes]:
    encoded = []
    for index, value in enumerate(np.asarray(array, order="C").reshape(-1)):
        if not isinstance(value, str):
            raise ValueError(f"{what}: {element(index, array.shape)} is not a str "
                             f"(got {type(value).__name__})")
        encoded.append(value.encode("utf-8"))
    return encoded


def encode_offsets(array: Array, what: str = "string tensor") -> bytes:
    """A string tensor's bytes in the tensor framing: ``count + 1`` uint32 offsets into the
    UTF-8 blob that follows them (row-major order). ``ValueError`` for an element that is not a
    ``str`` or a blob past 4 GiB (a programming error, not bad input)."""
    encoded = _utf8(array, what)
    offsets = np.zeros(len(encoded) + 1, _OFFSET)
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    total = int(lengths.sum())
    if total > _MAX_BLOB:
        raise ValueError(f"{what}: {total} bytes of text exceed 4 GiB")
    offsets[1:] = np.cumsum(lengths)
    return b"".join([offsets.tobytes(), *encoded])


def framed_nbytes(array: Array) -> int:
    """The bytes ``array`` takes in a tensor frame: ``nbytes`` for a numeric array, the offsets
    and the UTF-8 text for a string (object) array, without encoding ASCII text."""
    if array.dtype.kind != "O":
        return int(array.nbytes)
    text = sum(len(v) if isinstance(v, str) and v.isascii()
               else len(str(v).encode("utf-8", "surrogatepass")) for v in array.flat)
    return (array.size + 1) * _OFFSET.itemsize + text


def decode_offsets(name: str, region: memoryview, shape: list[int]) -> Array:
    """The object array of one framed string tensor (``region``: its ``nbytes`` bytes);
    ``InvalidInput`` naming the tensor (and the element) when it is malformed."""
    count = math.prod(shape)
    head = (count + 1) * _OFFSET.itemsize
    if len(region) < head:
        raise InvalidInput(f"Malformed tensor message: tensor '{name}': a string tensor of "
                           f"{count} elements needs {head} bytes of offsets, nbytes is "
                           f"{len(region)}")
    offsets = np.frombuffer(region, _OFFSET, count + 1).astype(np.int64)
    blob = region[head:]
    if offsets[0] != 0 or offsets[-1] != len(blob):
        raise InvalidInput(f"Malformed tensor message: tensor '{name}': string offsets must "
                           f"start at 0 and end at the text's {len(blob)} bytes, got "
                           f"{int(offsets[0])} and {int(offsets[-1])}")
    backwards = np.flatnonzero(np.diff(offsets) < 0)
    if backwards.size:
        raise InvalidInput(f"Malformed tensor message: tensor '{name}': offset "
                           f"{int(backwards[0]) + 1} is smaller than the one before it")
    return _array(_texts(name, blob, offsets.tolist(), shape), shape)


def _texts(name: str, blob: memoryview, bounds: Iterable[int], shape: Sequence[int]
           ) -> list[str]:
    items = []
    start: int | None = None
    for index, end in enumerate(bounds):
        if start is not None:
            try:
                items.append(str(blob[start:end], "utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"Input '{name}': {element(index - 1, shape)} is not valid "
                                   f"UTF-8 ({exc.reason} at byte {exc.start})") from None
        start = end
    return items


# --- Triton's binary extension: a length before each element -----------------------------------


def encode_prefixed(array: Array, what: str = "string tensor") -> bytes:
    """Triton's ``BYTES`` layout: per element (row-major) a uint32 length, then its bytes."""
    encoded = _utf8(array, what)
    return b"".join(chain.from_iterable((_LEN.pack(len(e)), e) for e in encoded))


def decode_prefixed(name: str, data: memoryview, shape: list[int]) -> Array:
    """A ``BYTES`` tensor of the binary extension: exactly ``prod(shape)`` length-prefixed
    elements filling ``data``; ``InvalidInput`` naming the input and the element otherwise."""
    count = math.prod(shape)
    items = []
    position = 0
    for index in range(count):
        if position + _LEN.size > len(data):
            raise InvalidInput(f"Input '{name}': binary data ends before the length of "
                               f"{element(index, shape)} ({count} elements expected)")
        (size,) = _LEN.unpack_from(data, position)
        position += _LEN.size
        if position + size > len(data):
            raise InvalidInput(f"Input '{name}': {element(index, shape)} claims {size} bytes, "
                               f"only {len(data) - position} are left")
        try:
            items.append(str(data[position:position + size], "utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"Input '{name}': {element(index, shape)} is not valid UTF-8 "
                               f"({exc.reason} at byte {exc.start})") from None
        position += size
    if position != len(data):
        raise InvalidInput(f"Input '{name}': {len(data) - position} bytes follow the last of "
                           f"its {count} elements")
    return _array(items, shape)
