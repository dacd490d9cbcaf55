"""The one reader of a delivered message (common/transport/amqp/delivered.py), which the consumer,
the retrier and the dead-letter responder share: a plain message is one request with the
message's caller, an envelope one request per member with the member's own."""

from __future__ import annotations

import pytest
from pamqp.commands import Basic

from common.errors import InvalidInput
from common.transport.amqp.delivered import read_message
from common.wire import (
    ENVELOPE_CONTENT_TYPE,
    HEADER_ENVELOPE,
    JSON_CONTENT_TYPE,
    encode_request_envelope,
    request_headers,
)


def test_a_plain_message_is_one_request_with_the_messages_caller() -> None:
    headers = request_headers(1_800_000_000.5)
    properties = Basic.Properties(content_type="application/json; charset=utf-8",
                                  correlation_id="c1", message_id="req-1", reply_to="replies",
                                  headers=headers)
    delivered = read_message(b"{}", properties)
    assert not delivered.envelope
    [request] = delivered.requests
    assert (request.body, request.content_type, request.correlation_id, request.message_id) == (
        b"{}", JSON_CONTENT_TYPE, "c1", "req-1")
    assert request.deadline() == 1_800_000_000.5


def test_an_envelope_is_one_request_per_member_with_its_own_ids_and_headers() -> None:
    members = [("a", b"body-a", {**request_headers(1_800_000_001), "message_id": "req-a"}),
               ("b", b"body-b", request_headers(1_800_000_002))]
    properties = Basic.Properties(content_type=ENVELOPE_CONTENT_TYPE, correlation_id="env",
                                  headers={HEADER_ENVELOPE: 1})
    delivered = read_message(encode_request_envelope(members), properties)
    assert delivered.envelope
    assert [(bytes(r.body), r.correlation_id, r.message_id, r.deadline())
            for r in delivered.requests] == [(b"body-a", "a", "req-a", 1_800_000_001),
                                             (b"body-b", "b", None, 1_800_000_002)]


@pytest.mark.parametrize(("body", "version"), [(b"garbage", 1), (b"", 2), (b"", None)])
def test_an_envelope_that_cannot_be_read_is_refused(body: bytes, version: int | None) -> None:
    headers = {} if version is None else {HEADER_ENVELOPE: version}
    with pytest.raises(InvalidInput):
        read_message(body, Basic.Properties(content_type=ENVELOPE_CONTENT_TYPE, headers=headers))
