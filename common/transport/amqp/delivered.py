"""What a delivered message carries, the one reader of a queue message into its requests, and
how many deliveries of it came before.

A message is one request (a tensor or JSON body) or an envelope of several
(common/wire/envelope.py). The consumer, the retrier and the dead-letter responder all read it
here, so they agree on its content type, its members and each member's caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pamqp.commands import Basic

from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    check_envelope_version,
    decode_request_envelope,
)
from common.wire.messages import (
    TENSORS_CONTENT_TYPE,
    RequestHeaders,
    parse_request_headers,
)

__all__ = ["Carried", "Delivered", "read_message", "redeliveries"]


@dataclass(frozen=True, slots=True)
class Carried:
    """One request of a message: its body, its own headers and what its caller is answered by
    (the message's ``reply_to`` is every request's)."""

    body: bytes | memoryview
    content_type: str
    """Without parameters (``application/json; charset=utf-8`` is ``application/json``)."""
    headers: Mapping[str, Any]
    correlation_id: str | None
    message_id: str | None

    def parsed_headers(self) -> RequestHeaders:
        """Its ``inferno-*`` headers; ``InvalidInput`` when one is malformed."""
        return parse_request_headers(self.headers)

    def deadline(self) -> float | None:
        return self.parsed_headers().deadline


@dataclass(frozen=True, slots=True)
class Delivered:
    properties: Basic.Properties
    envelope: bool
    requests: list[Carried]


def read_message(body: bytes | memoryview, properties: Basic.Properties) -> Delivered:
    """The requests ``body`` carries; ``InvalidInput`` when it is an envelope that cannot be
    read (its framing, or a version this worker does not know)."""
    content_type = (properties.content_type or "").split(";")[0].strip()
    if content_type != ENVELOPE_CONTENT_TYPE:
        return Delivered(properties, False, [Carried(
            body, content_type, properties.headers or {}, properties.correlation_id,
            properties.message_id)])
    check_envelope_version(properties.headers)
    members = [Carried(m.body, TENSORS_CONTENT_TYPE, m.headers, m.correlation_id,
                       _text_or_none(m.headers.get("message_id")))
               for m in decode_request_envelope(body)]
    return Delivered(properties, True, members)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def redeliveries(properties: Basic.Properties, redelivered: bool) -> int:
    """How many earlier deliveries of this message ended without a settlement: quorum queues'
    ``x-delivery-count``, else 1 when the broker flags it ``redelivered`` (classic queues)."""
    count = (properties.headers or {}).get("x-delivery-count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    return 1 if redelivered else 0
