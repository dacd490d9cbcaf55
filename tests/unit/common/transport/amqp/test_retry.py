"""What a redelivered message becomes on the retry queue (common/transport/amqp/retry.py): one
single message per request, with what its caller needs, and nothing for requests past their
deadline. The broker side (moved, then acknowledged): tests/contract/test_amqp_poison_contract.py.
"""

from __future__ import annotations

import datetime

import pytest
from pamqp.commands import Basic

from common.errors import InvalidInput
from common.transport.amqp.delivered import redeliveries
from common.transport.amqp.retry import HEADER_REDELIVERED, retry_copies, retry_queue_name
from common.wire import (
    ENVELOPE_CONTENT_TYPE,
    HEADER_ENVELOPE,
    TENSORS_CONTENT_TYPE,
    encode_request_envelope,
    request_headers,
)

NOW = 1_800_000_000.0


def test_the_retry_queue_is_named_after_the_version_queue_and_is_never_one() -> None:
    assert retry_queue_name("bag", 3) == "inferno.bag.v3.retry"


def test_redeliveries_come_from_the_delivery_count_or_the_redelivered_flag() -> None:
    assert redeliveries(Basic.Properties(headers={"x-delivery-count": 0}), False) == 0
    assert redeliveries(Basic.Properties(headers={"x-delivery-count": 3}), True) == 3
    assert redeliveries(Basic.Properties(), True) == 1  # classic queues: a flag, no count
    assert redeliveries(Basic.Properties(headers={"x-delivery-count": True}), False) == 0


def test_a_single_request_is_copied_with_its_caller_and_the_rest_of_its_deadline() -> None:
    stamp = datetime.datetime(2027, 1, 15, tzinfo=datetime.UTC)
    headers = {**request_headers(NOW + 2.5, ["y"], published=NOW - 1), "x-delivery-count": 1,
               "x-death": [{"reason": "rejected"}], "custom": "kept"}
    properties = Basic.Properties(
        content_type=TENSORS_CONTENT_TYPE, correlation_id="c1", reply_to="replies",
        message_id="req-1", expiration="30000", headers=headers, delivery_mode=2,
        timestamp=stamp, user_id="guest")

    [copy] = retry_copies(b"body", properties, 1, now=NOW)

    assert copy.body == b"body"
    p = copy.properties
    assert (p.content_type, p.correlation_id, p.reply_to, p.message_id, p.delivery_mode,
            p.timestamp) == (TENSORS_CONTENT_TYPE, "c1", "replies", "req-1", 2, stamp)
    assert p.expiration == "2500"  # what remains of its deadline, not the original 30 s
    assert p.user_id is None  # the broker checks it against the publishing connection's user
    assert p.headers == {**request_headers(NOW + 2.5, ["y"], published=NOW - 1),
                         "custom": "kept", HEADER_REDELIVERED: 1}


def test_a_request_without_a_deadline_keeps_its_expiration_and_one_past_it_is_dropped() -> None:
    plain = Basic.Properties(content_type=TENSORS_CONTENT_TYPE, expiration="900")
    [copy] = retry_copies(b"b", plain, 2, now=NOW)
    assert copy.properties.expiration == "900"
    assert copy.properties.headers == {HEADER_REDELIVERED: 2}
    late = Basic.Properties(content_type=TENSORS_CONTENT_TYPE,
                            headers=request_headers(NOW - 0.001))
    assert retry_copies(b"b", late, 1, now=NOW) == []


def test_an_envelope_becomes_one_message_per_live_member() -> None:
    members = [("a", b"body-a", {**request_headers(NOW + 1, ["y"]), "message_id": "req-a"}),
               ("b", b"body-b", {**request_headers(NOW - 1), "message_id": "req-b"}),
               ("c", b"body-c", {**request_headers(NOW + 3, published=NOW)})]
    properties = Basic.Properties(
        content_type=ENVELOPE_CONTENT_TYPE, correlation_id="env", reply_to="replies",
        message_id="env", expiration="3000", delivery_mode=1,
        headers={HEADER_ENVELOPE: 1, "x-delivery-count": 2})

    copies = retry_copies(encode_request_envelope(members), properties, 2, now=NOW)

    # b is past its deadline: nobody waits for it, as the batcher would have dropped it.
    assert [(c.body, c.properties.correlation_id, c.properties.message_id) for c in copies] == [
        (b"body-a", "a", "req-a"), (b"body-c", "c", None)]
    for copy in copies:
        assert copy.properties.content_type == TENSORS_CONTENT_TYPE
        assert copy.properties.reply_to == "replies" and copy.properties.delivery_mode == 1
    assert [c.properties.expiration for c in copies] == ["1000", "3000"]
    assert copies[0].properties.headers == {**request_headers(NOW + 1, ["y"]),
                                            HEADER_REDELIVERED: 2}
    assert copies[1].properties.headers == {**request_headers(NOW + 3, published=NOW),
                                            HEADER_REDELIVERED: 2}


def test_an_unreadable_envelope_is_not_moved() -> None:
    properties = Basic.Properties(content_type=ENVELOPE_CONTENT_TYPE, headers={HEADER_ENVELOPE: 1})
    with pytest.raises(InvalidInput):
        retry_copies(b"not an envelope", properties, 1, now=NOW)
    with pytest.raises(InvalidInput):  # a version this worker does not read
        retry_copies(b"", Basic.Properties(content_type=ENVELOPE_CONTENT_TYPE,
                                           headers={HEADER_ENVELOPE: 2}), 1, now=NOW)
