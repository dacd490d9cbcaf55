"""The messages that cross the facade→worker hop, as declared types (never tuples or pickle).

The in-process broker hands ``PredictRequest``/``PredictReply`` over as they are; the AMQP broker
encodes them with the framing below, which is the public contract of docs/queue-protocol.md.
Queue and routing-key names, content types and header names are defined here, in one place.

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
its 16-bit patterns. The encoder pads the header with spaces and each buffer with zeros so every
buffer starts 8-byte aligned; the decoder accepts any offsets (it copies only a buffer that lands
unaligned in memory) and never trusts them: every malformed body is an ``InvalidInput``.

Requests and replies share this one framing. A reply carries the header ``inferno-status``: ``ok``
with a tensor body, or an error code with the JSON body ``{"code": ..., "message": ...}``.

Past 400 lines because framing, request bodies and headers, and replies are one public contract,
read in one place; the framing (``encode_frame``/``decode_frame``) could move to its own module.
"""

from __future__ import annotations

import contextlib
import math
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt
import orjson

from common.errors import InfernoError, InvalidInput, WorkerFailed, error_from_code
from common.model.codecs import decode_tensor, parse_json_object
from common.model.dtypes import DType
from common.model.signature import Signature

__all__ = [
    "HEADER_CODEC",
    "HEADER_DEADLINE",
    "HEADER_OUTPUTS",
    "HEADER_PUBLISHED",
    "HEADER_STATUS",
    "JSON_CONTENT_TYPE",
    "STATUS_OK",
    "TENSORS_CONTENT_TYPE",
    "PredictReply",
    "PredictRequest",
    "RequestHeaders",
    "decode_frame",
    "decode_inputs",
    "decode_json_inputs",
    "decode_reply",
    "encode_frame",
    "encode_reply",
    "parse_request_headers",
    "queue_name",
    "reply_content_type",
    "request_headers",
    "routing_key",
]

Array = npt.NDArray[Any]

TENSORS_CONTENT_TYPE = "application/x-inferno-tensors"
JSON_CONTENT_TYPE = "application/json"

HEADER_DEADLINE = "inferno-deadline"
"""Request: the deadline, integer epoch milliseconds."""
HEADER_OUTPUTS = "inferno-outputs"
"""Request: comma-separated output names to return (absent: every output)."""
HEADER_CODEC = "inferno-codec"
"""Request: the HTTP output codec the caller will use (``json``/``base64``); informational."""
HEADER_STATUS = "inferno-status"
"""Reply: ``ok``, or the error code of ``common.errors``."""
HEADER_PUBLISHED = "inferno-published"
"""Request: epoch milliseconds of the publish (the queue-wait metric); optional."""
STATUS_OK = "ok"

_ALIGN = 8
_LEN = struct.Struct("<I")
_MAX_DIMS = 32  # numpy 1.x's limit; nobody sends more
_DTYPES = {d.value: d for d in DType}
_MAX_MESSAGE = 1000  # bytes of a non-JSON error body kept as the message


def routing_key(model: str, version: int) -> str:
    """The pinned routing key of one model version."""
    return f"{model}.v{version}"

def queue_name(model: str, version: int) -> str:
    return f"inferno.{model}.v{version}"

@dataclass(slots=True)
class PredictRequest:
    """One validated predict call for one model version."""

    model: str
    version: int
    inputs: dict[str, Array]
    deadline: float
    """Epoch seconds after which nobody waits for the answer any more."""
    outputs: list[str] | None = None
    """Outputs to return; ``None`` for all of them."""
    request_id: str = ""
    rows: int = 0
    """Rows along the batch dimension, set by validation; 0 means not validated yet (never read
    from the wire: the worker validates what a producer sent)."""
    dtypes: Mapping[str, DType] | None = None
    """Logical dtypes of the inputs (the signature's), so bfloat16 is labelled as such on the
    wire; ``None`` reads them off the arrays."""
    published: float = 0.0
    """Epoch seconds when the facade published it (queue-wait metric)."""

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)

@dataclass(slots=True)
class PredictReply:
    """Either the outputs of one request or the error that ended it."""

    outputs: dict[str, Array] = field(default_factory=dict)
    error: InfernoError | None = None

    def result(self) -> dict[str, Array]:
        """The outputs, or the error raised again on the caller's side."""
        if self.error is not None:
            raise self.error
        return self.outputs


# --- the tensor framing ---------------------------------------------------------------------


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
        array = np.frombuffer(view, dtype.numpy, math.prod(shape), start + offset).reshape(shape)
        if not array.flags.aligned:
            array = array.copy()
        if dtype is DType.BOOL and array.size and array.view(np.uint8).max() > 1:
            raise _malformed(f"tensor '{name}': bool bytes must be 0 or 1")
        arrays[name] = array
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
    shape = spec.get("shape")
    if not (isinstance(shape, list) and len(shape) <= _MAX_DIMS
            and all(_is_count(d) for d in shape)):
        raise _malformed(f"tensor '{name}': 'shape' must be a list of at most {_MAX_DIMS} "
                         "non-negative integers")
    offset, nbytes = spec.get("offset"), spec.get("nbytes")
    if not (_is_count(offset) and _is_count(nbytes)):
        raise _malformed(f"tensor '{name}': 'offset' and 'nbytes' must be non-negative integers")
    expected = math.prod(shape) * dtype.numpy.itemsize
    if nbytes != expected:
        raise _malformed(f"tensor '{name}': nbytes {nbytes} does not match shape {shape} of "
                         f"{dtype.value} ({expected} bytes)")
    if offset + nbytes > size:
        raise _malformed(f"tensor '{name}': bytes [{offset}, {offset + nbytes}) lie beyond the "
                         f"data region of {size} bytes")
    return name, dtype, shape, offset, nbytes


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(f"Malformed tensor message: {detail}")


# --- requests -------------------------------------------------------------------------------


def decode_json_inputs(body: bytes | bytearray | memoryview, signature: Signature
                       ) -> tuple[dict[str, Array], list[str] | None]:
    """Inputs and output selection of a JSON body in the HTTP v1 request shape.

    ``{"inputs": {name: {"data"|"b64", "shape"?, "dtype"?}}, "outputs": [...]?}``; other keys
    are ignored. Input names are checked before any data is decoded; ``outputs`` absent, null or
    ``[]`` means every output (names are checked later, with the rest of the request).
    """
    parsed = parse_json_object(body)
    inputs = parsed.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise InvalidInput("'inputs' must be an object mapping input names to tensors")
    signature.check_input_names(inputs)
    specs = signature.input_specs
    arrays = {name: decode_tensor(name, payload, specs[name].dtype)
              for name, payload in inputs.items()}
    outputs = parsed.get("outputs")
    if outputs is not None and not (
            isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)):
        raise InvalidInput("'outputs' must be a list of output names")
    return arrays, outputs or None


def decode_inputs(body: bytes | bytearray | memoryview, content_type: str | None,
                  signature: Signature) -> tuple[dict[str, Array], list[str] | None]:
    """A request body of either content type: its inputs and, for JSON, its ``outputs`` field.

    Each tensor must declare its signature dtype (``bfloat16`` is not ``uint16``). A tensor body
    selects outputs only through the ``inferno-outputs`` header, so its selection here is ``None``.
    """
    if content_type == TENSORS_CONTENT_TYPE:
        arrays, _ = decode_frame(body, {s.name: s.dtype for s in signature.inputs})
        signature.check_input_names(arrays)
        return arrays, None
    if content_type == JSON_CONTENT_TYPE:
        return decode_json_inputs(body, signature)
    raise InvalidInput(f"Unsupported content type {content_type!r}; use "
                       f"{TENSORS_CONTENT_TYPE} or {JSON_CONTENT_TYPE}")


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    """The ``inferno-*`` headers of a request message, parsed."""

    deadline: float | None = None
    """Epoch seconds (the header holds epoch milliseconds); ``None`` when absent."""
    outputs: list[str] | None = None
    codec: str | None = None
    published: float | None = None
    """Epoch seconds when the producer published it (the queue-wait metric)."""


def request_headers(deadline: float, outputs: Sequence[str] | None = None,
                    codec: str | None = None, published: float | None = None
                    ) -> dict[str, Any]:
    """The AMQP headers of a request whose deadline is ``deadline`` (epoch seconds)."""
    headers: dict[str, Any] = {HEADER_DEADLINE: round(deadline * 1000)}
    if published is not None:
        # Milliseconds: the AMQP timestamp property has whole seconds only.
        headers[HEADER_PUBLISHED] = round(published * 1000)
    if outputs:
        headers[HEADER_OUTPUTS] = ",".join(outputs)
    if codec is not None:
        headers[HEADER_CODEC] = codec
    return headers


def parse_request_headers(headers: Mapping[str, Any] | None) -> RequestHeaders:
    """Read the ``inferno-*`` headers a producer sent; ``InvalidInput`` when one is malformed.

    ``inferno-deadline`` may be an integer, a float or a numeric string (epoch ms);
    ``inferno-outputs`` a comma-separated string or an array of strings.
    """
    if not headers:
        return RequestHeaders()
    deadline = None
    if headers.get(HEADER_DEADLINE) is not None:
        deadline = _epoch_ms(headers[HEADER_DEADLINE]) / 1000
    raw = _text(headers.get(HEADER_OUTPUTS))
    outputs: list[str] | None
    if raw is None:
        outputs = None
    elif isinstance(raw, str):
        outputs = [o.strip() for o in raw.split(",") if o.strip()]
    elif isinstance(raw, (list, tuple)) and all(isinstance(_text(o), str) for o in raw):
        outputs = [_text(o) for o in raw]
    else:
        raise InvalidInput(f"Header '{HEADER_OUTPUTS}' must be comma-separated output names")
    codec = _text(headers.get(HEADER_CODEC))
    if codec is not None and not isinstance(codec, str):
        raise InvalidInput(f"Header '{HEADER_CODEC}' must be a string")
    published = None
    if headers.get(HEADER_PUBLISHED) is not None:
        published = _epoch_ms(headers[HEADER_PUBLISHED], HEADER_PUBLISHED) / 1000
    return RequestHeaders(deadline=deadline, outputs=outputs or None, codec=codec,
                          published=published)


def _epoch_ms(value: Any, header: str = HEADER_DEADLINE) -> float:
    value = _text(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise InvalidInput(f"Header '{header}' must be epoch milliseconds, got {value!r}")
    return float(value)


def _text(value: Any) -> Any:
    """AMQP clients may hand string headers over as bytes (pamqp does for non-UTF-8 text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# --- replies --------------------------------------------------------------------------------


def encode_reply(reply: PredictReply, dtypes: Mapping[str, DType] | None = None
                 ) -> tuple[bytes, str]:
    """The body and ``inferno-status`` of a reply; never raises.

    Outputs go in a tensor body with status ``ok``; an error goes as JSON ``{"code",
    "message"}`` with its code as status. Outputs that cannot be encoded (unsupported dtype, storage
    that does not match ``dtypes``) become a ``worker_failed`` error reply.
    """
    error = reply.error
    if error is None:
        try:
            return encode_frame(reply.outputs, dtypes), STATUS_OK
        except (TypeError, ValueError) as exc:
            error = WorkerFailed(f"Could not encode the outputs: {exc}")
    return orjson.dumps(error.to_dict()), error.code


def reply_content_type(status: str) -> str:
    """The content type of a reply body with this ``inferno-status``."""
    return TENSORS_CONTENT_TYPE if status == STATUS_OK else JSON_CONTENT_TYPE


def decode_reply(body: bytes | bytearray | memoryview, status: str | bytes | None
                 ) -> PredictReply:
    """The reply a worker sent; never raises: a malformed reply becomes a ``WorkerFailed``.

    An error is rebuilt as its own class (``error_from_code``), the status naming the code.
    """
    status = _text(status)
    if status == STATUS_OK:
        try:
            outputs, _ = decode_frame(body)
        except InvalidInput as exc:
            return PredictReply(error=WorkerFailed(f"Malformed reply from the worker: {exc}"))
        return PredictReply(outputs=outputs)
    if not isinstance(status, str) or not status:
        return PredictReply(error=WorkerFailed(f"Reply without a valid '{HEADER_STATUS}' header"))
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    if not isinstance(message, str):
        message = bytes(body[:_MAX_MESSAGE]).decode("utf-8", "replace") or status
    return PredictReply(error=error_from_code(status, message))
