"""Envelopes (common/wire/envelope.py): several requests, or their replies, in one message body.

What is tried: a round trip of request and reply envelopes whose members are exactly what single
messages carry (decoded by the same functions), members that stay aligned views, and every way an
envelope can be malformed (not a frame, a member that is not a uint8 blob, headers that do not
cover the members, no member at all), plus the version header in every shape a producer could
send. Each is an ``InvalidInput`` naming the envelope, never another exception.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.errors import InvalidInput, ModelFailed
from common.wire.envelope import (
    HEADER_ENVELOPE,
    check_envelope_version,
    decode_reply_envelope,
    decode_request_envelope,
    encode_reply_envelope,
    encode_request_envelope,
)
from common.wire.framing import decode_frame, encode_frame
from common.wire.messages import PredictReply, decode_reply, encode_reply, request_headers


def test_request_members_come_back_as_single_message_bodies() -> None:
    bodies = [encode_frame({"x": np.full((rows, 3), rows, np.float32)}) for rows in (1, 2, 5)]
    headers = [request_headers(1000.0 + i, ["y"] if i else None) for i in range(3)]
    envelope = encode_request_envelope([(f"c{i}", body, headers[i])
                                        for i, body in enumerate(bodies)])

    members = decode_request_envelope(envelope)

    assert [m.correlation_id for m in members] == ["c0", "c1", "c2"]
    for member, body, header, rows in zip(members, bodies, headers, (1, 2, 5), strict=True):
        assert bytes(member.body) == body
        assert member.headers == header
        arrays, _ = decode_frame(member.body)
        assert arrays["x"].flags.aligned  # a view in place: members start 8-byte aligned
        np.testing.assert_array_equal(arrays["x"], np.full((rows, 3), rows))


def test_reply_members_carry_outputs_and_typed_errors() -> None:
    ok_body, ok_status = encode_reply(PredictReply({"y": np.arange(4, dtype=np.int64)}))
    error_body, error_status = encode_reply(PredictReply(error=ModelFailed("boom")))
    envelope = encode_reply_envelope([("a", ok_body, ok_status), ("b", error_body, error_status)])

    replies = {r.correlation_id: decode_reply(r.body, r.status)
               for r in decode_reply_envelope(envelope)}

    np.testing.assert_array_equal(replies["a"].result()["y"], np.arange(4))
    with pytest.raises(ModelFailed, match="boom"):
        replies["b"].result()


def test_a_correlation_id_appears_once_per_envelope() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        encode_reply_envelope([("a", b"x", "ok"), ("a", b"y", "ok")])


def _frame(tensors: dict[str, Any], **extra: Any) -> bytes:
    return encode_frame(tensors, extra=extra or None)


BLOB = np.frombuffer(b"abcdefgh", np.uint8)
MALFORMED_REQUESTS = {
    "not-a-frame": b"\x01\x00",
    "no-members": _frame({}, members={}),
    "member-not-uint8": _frame({"a": np.zeros(2, np.float32)}, members={"a": {}}),
    "member-not-1d": _frame({"a": np.zeros((2, 2), np.uint8)}, members={"a": {}}),
    "no-members-key": _frame({"a": BLOB}),
    "members-not-an-object": _frame({"a": BLOB}, members=["a"]),
    "member-without-headers": _frame({"a": BLOB, "b": BLOB}, members={"a": {}}),
    "headers-of-an-unknown-member": _frame({"a": BLOB}, members={"a": {}, "z": {}}),
    "headers-not-an-object": _frame({"a": BLOB}, members={"a": "soon"}),
}


@pytest.mark.parametrize("body", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_a_malformed_request_envelope_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="Malformed envelope"):
        decode_request_envelope(body)


@pytest.mark.parametrize("body", [
    _frame({"a": BLOB}),
    _frame({"a": BLOB}, status={"a": 200}),
    _frame({"a": BLOB}, status={"b": "ok"}),
    _frame({}, status={}),
], ids=["no-status", "status-not-a-string", "status-of-another-member", "no-members"])
def test_a_malformed_reply_envelope_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="Malformed envelope"):
        decode_reply_envelope(body)


def test_version_1_is_read() -> None:
    check_envelope_version({HEADER_ENVELOPE: 1})


@pytest.mark.parametrize("headers", [None, {}, {HEADER_ENVELOPE: 2}, {HEADER_ENVELOPE: "1"},
                                     {HEADER_ENVELOPE: True}, {HEADER_ENVELOPE: 1.5}])
def test_any_other_version_is_refused(headers: dict[str, Any] | None) -> None:
    with pytest.raises(InvalidInput, match="Unsupported envelope"):
        check_envelope_version(headers)
