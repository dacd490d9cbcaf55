"""The coalescing envelope: several requests (or their replies) in one queue message.

Per-message AMQP work (frames, properties, a confirm, a delivery, a reply and an ack) costs the
facade and the worker more CPU than the request itself, so the facade gathers the requests to one
model version decoded in one event-loop turn (common/transport/amqp/coalescing.py) and sends them as
one message (docs/queue-protocol.md, "Envelopes"). An envelope is a tensor frame
(``common.wire.framing``) whose tensors are the members' own bodies as ``uint8`` blobs, named by
their correlation ids; the header keeps each member's ``inferno-*`` headers (request) or status
(reply). So one decoder validates the layout, and each member body is exactly what a single
message would carry, decoded by the same functions.

The message says ``content_type: application/x-inferno-envelope`` and carries the header
``inferno-envelope`` with the format version; a reader refuses a version it does not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInput
from common.wire.framing import decode_frame, encode_frame

__all__ = [
    "ENVELOPE_CONTENT_TYPE",
    "ENVELOPE_VERSION",
    "HEADER_ENVELOPE",
    "MAX_ENVELOPE_BYTES",
    "Member",
    "MemberReply",
    "check_envelope_version",
    "decode_reply_envelope",
    "decode_request_envelope",
    "encode_reply_envelope",
    "encode_request_envelope",
]

Array = npt.NDArray[Any]

ENVELOPE_CONTENT_TYPE = "application/x-inferno-envelope"
HEADER_ENVELOPE = "inferno-envelope"
"""Envelope messages: the format version, an integer."""
ENVELOPE_VERSION = 1
MAX_ENVELOPE_BYTES = 1024 * 1024
"""Default cap on the tensor bytes of one request envelope (``INFERNO_ENVELOPE_MAX_BYTES``)."""

_MEMBERS = "members"
"""Request envelope header: correlation id → that member's headers (``message_id`` and the
``inferno-*`` request headers)."""
_STATUS = "status"
"""Reply envelope header: correlation id → that member's ``inferno-status``."""


@dataclass(frozen=True, slots=True)
class Member:
    """One request of a request envelope, as a single message would carry it."""

    correlation_id: str
    body: memoryview
    """A tensor body (``application/x-inferno-tensors``)."""
    headers: Mapping[str, Any]
    """Its ``inferno-*`` headers and ``message_id``, as ``parse_request_headers`` reads them."""


@dataclass(frozen=True, slots=True)
class MemberReply:
    """One reply of a reply envelope: a reply message's body and ``inferno-status``."""

    correlation_id: str
    body: memoryview
    status: str


def check_envelope_version(headers: Mapping[str, Any] | None) -> None:
    """``InvalidInput`` unless the message's ``inferno-envelope`` header is a version this code
    reads (a newer facade's envelope reaching an older worker is refused, not misread)."""
    version = (headers or {}).get(HEADER_ENVELOPE)
    if version != ENVELOPE_VERSION or isinstance(version, bool):
        raise InvalidInput(f"Unsupported envelope: header '{HEADER_ENVELOPE}' is {version!r}; "
                           f"this worker reads version {ENVELOPE_VERSION}")


def encode_request_envelope(members: Sequence[tuple[str, bytes, Mapping[str, Any]]]) -> bytes:
    """The body of a request envelope: ``(correlation id, tensor body, headers)`` per member."""
    return _encode(((cid, body) for cid, body, _ in members),
                   {_MEMBERS: {cid: dict(headers) for cid, _, headers in members}})


def decode_request_envelope(body: bytes | bytearray | memoryview) -> list[Member]:
    """The members of a request envelope, in order; ``InvalidInput`` when it is malformed."""
    blobs, headers = _decode(body, _MEMBERS, dict, "its headers")
    return [Member(cid, blob, headers[cid]) for cid, blob in blobs.items()]


def encode_reply_envelope(replies: Sequence[tuple[str, bytes, str]]) -> bytes:
    """The body of a reply envelope: ``(correlation id, reply body, status)`` per member."""
    return _encode(((cid, body) for cid, body, _ in replies),
                   {_STATUS: {cid: status for cid, _, status in replies}})


def decode_reply_envelope(body: bytes | bytearray | memoryview) -> list[MemberReply]:
    """The replies of a reply envelope; ``InvalidInput`` when it is malformed."""
    blobs, status = _decode(body, _STATUS, str, "its status")
    return [MemberReply(cid, blob, status[cid]) for cid, blob in blobs.items()]


def _encode(blobs: Iterable[tuple[str, bytes]], extra: dict[str, Any]) -> bytes:
    arrays: dict[str, Array] = {}
    for correlation_id, blob in blobs:
        if correlation_id in arrays:
            raise ValueError(f"duplicate correlation id {correlation_id!r} in one envelope")
        arrays[correlation_id] = np.frombuffer(blob, np.uint8)
    return encode_frame(arrays, extra=extra)


def _decode(body: bytes | bytearray | memoryview, key: str, kind: type, what: str
            ) -> tuple[dict[str, memoryview], dict[str, Any]]:
    """The member blobs by correlation id, and the header map ``key`` that must give each of
    them exactly one value of type ``kind``."""
    try:
        arrays, extra = decode_frame(body)
    except InvalidInput as exc:
        raise _malformed(str(exc)) from None
    blobs: dict[str, memoryview] = {}
    for correlation_id, array in arrays.items():
        if array.dtype != np.uint8 or array.ndim != 1:
            raise _malformed(f"member {correlation_id!r} must be a 1-d uint8 blob")
        blobs[correlation_id] = array.data
    if not blobs:
        raise _malformed("no members")
    values = extra.get(key)
    if not isinstance(values, dict) or values.keys() != blobs.keys() or not all(
            isinstance(v, kind) for v in values.values()):
        raise _malformed(f"'{key}' must map every member's correlation id to {what}")
    return blobs, values


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(f"Malformed envelope: {detail}")
