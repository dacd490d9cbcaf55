"""The messages that cross the facade→worker hop: declared types (never tuples or pickle), and
how a queue message's properties and body carry them (docs/queue-protocol.md).

The in-process broker hands ``PredictRequest``/``PredictReply`` over as they are; the AMQP broker
encodes them: tensors in the framing of ``common.wire.framing`` (or, from producers, the JSON body
of ``common.wire.json_request``), deadline and output selection in ``inferno-*`` headers. Queue and
routing-key names, content types and header names are defined here, in one place.

A reply carries the header ``inferno-status``: ``ok`` with a tensor body, or an error code with
the JSON body ``{"code": ..., "message": ...}``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt
import orjson

from common.errors import InfernoError, InvalidInput, WorkerFailed, error_from_code
from common.model.config import ModelConfig
from common.model.dtypes import DType
from common.model.signature import Checked, Signature
from common.wire.framing import Claim, decode_frame, encode_frame
from common.wire.json_request import decode_json_inputs, parse_json_object

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
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
    "decode_inputs",
    "decode_reply",
    "encode_reply",
    "epoch_ms",
    "expiration",
    "header_text",
    "parse_epoch_ms",
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
HEADER_STATUS = "inferno-status"
"""Reply: ``ok``, or the error code of ``common.errors``."""
HEADER_PUBLISHED = "inferno-published"
"""Request: epoch milliseconds of the publish (the queue-wait metric); optional."""
STATUS_OK = "ok"

DEFAULT_MAX_ELEMENTS = 16_777_216
"""``INFERNO_MAX_ELEMENTS_PER_TENSOR``'s default: 16 Mi elements, 64 MiB of float32."""
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
    checked: Checked
    """What ``Signature.validate_request`` found: rows, per-input dims, the outputs to return."""
    deadline: float
    """Epoch seconds after which nobody waits for the answer any more."""
    request_id: str = ""
    dtypes: Mapping[str, DType] | None = None
    """Logical dtypes of the inputs (the signature's), so bfloat16 is labelled as such on the
    wire; ``None`` reads them off the arrays."""
    published: float = 0.0
    """Epoch seconds when the facade published it (queue-wait metric)."""

    @classmethod
    def admit(cls, config: ModelConfig, inputs: dict[str, Array], outputs: list[str] | None, *,
              max_elements: int, deadline: float, request_id: str = "",
              published: float = 0.0) -> PredictRequest:
        """The admission, the one way decoded inputs become a request (``outputs``: the
        selection asked for, ``None`` for all), or ``InvalidInput``. The facade admits what HTTP
        clients send and the worker's consumer what producers publish by it, so a queue message
        is held to an HTTP request's limits: the element limit per tensor, then the signature
        (names, dtypes, shapes, rows, string limits, outputs)."""
        for name, array in inputs.items():
            if array.size > max_elements:
                raise InvalidInput(f"Input '{name}': {array.size} elements exceed the limit of "
                                   f"{max_elements} per tensor")
        signature = config.signature
        checked = signature.validate_request(
            inputs, outputs, max_rows=config.batching.max_batch_size, model=config.name)
        return cls(model=config.name, version=config.version, inputs=inputs, checked=checked,
                   deadline=deadline, request_id=request_id, dtypes=signature.input_dtypes,
                   published=published)

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


# --- requests -------------------------------------------------------------------------------


def decode_inputs(body: bytes | bytearray | memoryview, content_type: str | None,
                  signature: Signature, blobs: Mapping[str, bytes | None] | None = None
                  ) -> tuple[dict[str, Array], list[str] | None]:
    """A request body of either content type: its inputs and, for JSON, its ``outputs`` field;
    ``blobs``: the bytes of the tensors it claims (``decode_frame``).

    Each tensor must declare its signature dtype (``bfloat16`` is not ``uint16``). A tensor body
    selects outputs only through the ``inferno-outputs`` header, so its selection here is ``None``.
    """
    if content_type == TENSORS_CONTENT_TYPE:
        arrays, _ = decode_frame(body, {s.name: s.dtype for s in signature.inputs}, blobs)
        signature.check_input_names(arrays)
        return arrays, None
    if content_type == JSON_CONTENT_TYPE:
        return decode_json_inputs(parse_json_object(body), signature)
    raise InvalidInput(f"Unsupported content type {content_type!r}; use "
                       f"{TENSORS_CONTENT_TYPE} or {JSON_CONTENT_TYPE}")


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    """The ``inferno-*`` headers of a request message, parsed."""

    deadline: float | None = None
    """Epoch seconds (the header holds epoch milliseconds); ``None`` when absent."""
    outputs: list[str] | None = None
    published: float | None = None
    """Epoch seconds when the producer published it (the queue-wait metric)."""


def request_headers(deadline: float, outputs: Sequence[str] | None = None,
                    published: float | None = None) -> dict[str, Any]:
    """The AMQP headers of a request whose deadline is ``deadline`` (epoch seconds)."""
    headers: dict[str, Any] = {HEADER_DEADLINE: epoch_ms(deadline)}
    if published is not None:
        # Milliseconds: the AMQP timestamp property has whole seconds only.
        headers[HEADER_PUBLISHED] = epoch_ms(published)
    if outputs:
        headers[HEADER_OUTPUTS] = ",".join(outputs)
    return headers


def parse_request_headers(headers: Mapping[str, Any] | None) -> RequestHeaders:
    """Read the ``inferno-*`` headers a producer sent; ``InvalidInput`` when one is malformed.

    ``inferno-outputs`` may be a comma-separated string or an array of strings.
    """
    if not headers:
        return RequestHeaders()
    raw = header_text(headers.get(HEADER_OUTPUTS))
    outputs: list[str] | None
    if raw is None:
        outputs = None
    elif isinstance(raw, str):
        outputs = [o.strip() for o in raw.split(",") if o.strip()]
    elif isinstance(raw, (list, tuple)) and all(isinstance(header_text(o), str) for o in raw):
        outputs = [header_text(o) for o in raw]
    else:
        raise InvalidInput(f"Header '{HEADER_OUTPUTS}' must be comma-separated output names")
    return RequestHeaders(deadline=parse_epoch_ms(headers, HEADER_DEADLINE),
                          outputs=outputs or None,
                          published=parse_epoch_ms(headers, HEADER_PUBLISHED))


# --- the deadline on the wire: one rule for every message that carries one ------------------


def epoch_ms(seconds: float) -> int:
    """A time header's value (``inferno-deadline``, ``inferno-published``): integer epoch ms."""
    return round(seconds * 1000)


def parse_epoch_ms(headers: Mapping[str, Any], header: str) -> float | None:
    """The time in a header, in epoch seconds (``None`` when absent); the header may hold an
    integer, a float or a numeric string of epoch milliseconds, else ``InvalidInput``."""
    value = header_text(headers.get(header))
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise InvalidInput(f"Header '{header}' must be epoch milliseconds, got {value!r}")
    return value / 1000


def expiration(deadline: float, now: float) -> str:
    """The AMQP ``expiration`` of a message due at ``deadline``: the whole milliseconds left, at
    least 1 (the broker drops it then; an absent expiration would keep it forever)."""
    return str(max(1, int((deadline - now) * 1000)))


def header_text(value: Any) -> Any:
    """A header's value with bytes read as text: AMQP clients may hand string headers over as
    bytes (pamqp does for non-UTF-8 text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def encode_reply(reply: PredictReply, dtypes: Mapping[str, DType] | None = None,
                 claim: Claim | None = None) -> tuple[bytes, str]:
    """The body and ``inferno-status`` of a reply; never raises. ``claim``: which outputs go by
    reference (``encode_frame``).

    Outputs go in a tensor body with status ``ok``; an error goes as JSON ``{"code",
    "message"}`` with its code as status. Outputs that cannot be encoded (unsupported dtype, storage
    that does not match ``dtypes``) become a ``worker_failed`` error reply.
    """
    error = reply.error
    if error is None:
        try:
            return encode_frame(reply.outputs, dtypes, claim=claim), STATUS_OK
        except (TypeError, ValueError) as exc:
            error = WorkerFailed(f"Could not encode the outputs: {exc}")
    return orjson.dumps(error.to_dict()), error.code


def reply_content_type(status: str) -> str:
    """The content type of a reply body with this ``inferno-status``."""
    return TENSORS_CONTENT_TYPE if status == STATUS_OK else JSON_CONTENT_TYPE


def decode_reply(body: bytes | bytearray | memoryview, status: str | bytes | None,
                 blobs: Mapping[str, bytes | None] | None = None) -> PredictReply:
    """The reply a worker sent; never raises: a malformed reply becomes a ``WorkerFailed``.
    ``blobs``: the bytes of the outputs it claims.

    An error is rebuilt as its own class (``error_from_code``), the status naming the code.
    """
    status = header_text(status)
    if status == STATUS_OK:
        try:
            outputs, _ = decode_frame(body, blobs=blobs)
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
