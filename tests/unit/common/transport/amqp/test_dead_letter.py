"""The answer to a dead-lettered request (common/transport/amqp/dead_letter.py): ``poison_request``
to its own ``reply_to`` and correlation id for a request over the delivery limit, one per member
for an envelope; nothing for the other dead-letter reasons, for fire-and-forget requests and for
callers past their deadline. On the broker: tests/contract/test_amqp_poison_contract.py."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp.commands import Basic

from common.errors import PoisonRequest
from common.transport.amqp.dead_letter import poison_binding, poison_reply
from common.wire import (
    ENVELOPE_CONTENT_TYPE,
    HEADER_ENVELOPE,
    HEADER_STATUS,
    JSON_CONTENT_TYPE,
    TENSORS_CONTENT_TYPE,
    decode_reply,
    decode_reply_envelope,
    encode_request_envelope,
    request_headers,
)

NOW = 1_800_000_000.0


def props(content_type: str | None, headers: dict[str, Any], correlation_id: str,
          reply_to: str | None) -> Basic.Properties:
    """A dead letter's properties, as the responder receives them."""
    return Basic.Properties(content_type=content_type, headers=headers,
                            correlation_id=correlation_id, reply_to=reply_to)


def dead(reason: str, **headers: Any) -> dict[str, Any]:
    """Headers as RabbitMQ leaves them on a dead-lettered message (latest death first)."""
    return {**headers, "x-death": [{"count": 1, "reason": reason, "queue": "inferno.m.v1.retry",
                                    "exchange": "", "routing-keys": ["inferno.m.v1.retry"]}],
            "x-first-death-reason": reason}


def test_a_request_over_the_delivery_limit_is_answered_poison_request() -> None:
    headers = dead("delivery_limit", **request_headers(NOW + 5))
    reply = poison_reply(b"...", props(TENSORS_CONTENT_TYPE, headers, "c1", "replies"), 2, now=NOW)

    assert reply is not None
    assert (reply.routing_key, reply.correlation_id) == ("replies", "c1")
    assert reply.content_type == JSON_CONTENT_TYPE
    assert reply.headers == {HEADER_STATUS: "poison_request"}
    error = decode_reply(reply.body, reply.headers[HEADER_STATUS]).error
    assert isinstance(error, PoisonRequest) and error.status_code == 500
    assert "delivered 3 times from inferno.m.v1.retry" in error.message
    assert "poison request" in error.message


@pytest.mark.parametrize("reason", ["rejected", "expired", "maxlen"])
def test_other_dead_letters_are_not_answered(reason: str) -> None:
    # rejected: answered invalid_input already; expired: its caller had its 504.
    headers = dead(reason, **request_headers(NOW + 5))
    assert poison_reply(b"", props(TENSORS_CONTENT_TYPE, headers, "c1", "replies"), 2,
                        now=NOW) is None


def test_no_reply_to_no_death_or_a_passed_deadline_is_not_answered() -> None:
    live = dead("delivery_limit", **request_headers(NOW + 5))
    assert poison_reply(b"", props(TENSORS_CONTENT_TYPE, live, "c1", None), 2, now=NOW) is None
    assert poison_reply(b"", props(TENSORS_CONTENT_TYPE, request_headers(NOW + 5), "c1", "r"), 2,
                        now=NOW) is None
    late = dead("delivery_limit", **request_headers(NOW - 1))
    assert poison_reply(b"", props(TENSORS_CONTENT_TYPE, late, "c1", "r"), 2, now=NOW) is None
    # Without a deadline (a producer that sets none) its caller is answered.
    assert poison_reply(b"", props(None, dead("delivery_limit"), "c1", "r"), 2,
                        now=NOW) is not None


def test_an_envelope_over_the_limit_answers_each_live_member_in_one_reply_envelope() -> None:
    body = encode_request_envelope([
        ("a", b"x", request_headers(NOW + 1)), ("b", b"y", request_headers(NOW - 1)),
        ("c", b"z", {"message_id": "req-c"})])
    headers = dead("delivery_limit", **{HEADER_ENVELOPE: 1}, **request_headers(NOW + 1))

    reply = poison_reply(body, props(ENVELOPE_CONTENT_TYPE, headers, "env", "replies"), 1,
                         now=NOW)

    assert reply is not None and reply.correlation_id == "env"
    assert reply.content_type == ENVELOPE_CONTENT_TYPE
    assert reply.headers == {HEADER_ENVELOPE: 1}
    members = decode_reply_envelope(reply.body)
    assert [m.correlation_id for m in members] == ["a", "c"]  # b's caller stopped waiting
    for member in members:
        assert member.status == "poison_request"
        assert isinstance(decode_reply(member.body, member.status).error, PoisonRequest)
    unreadable = poison_reply(b"garbage", props(ENVELOPE_CONTENT_TYPE, headers, "env", "r"), 1,
                              now=NOW)
    assert unreadable is None


def test_only_delivery_limit_deaths_reach_the_poison_queue() -> None:
    assert poison_binding() == {"x-match": "all", "x-first-death-reason": "delivery_limit"}
