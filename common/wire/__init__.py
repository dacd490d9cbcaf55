"""What crosses the queue hop, the public contract of docs/queue-protocol.md: the typed messages
and how queue messages carry them (``messages``), the tensor framing of their bodies
(``framing``), the JSON request body that HTTP v1 clients and producers share (``json_request``),
and envelopes, several requests or replies in one message (``envelope``). Producers import what
they need from here."""

from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    ENVELOPE_VERSION,
    HEADER_ENVELOPE,
    Member,
    MemberReply,
    decode_reply_envelope,
    decode_request_envelope,
    encode_reply_envelope,
    encode_request_envelope,
)
from common.wire.framing import decode_frame, encode_frame
from common.wire.json_request import decode_json_inputs, parse_json_object
from common.wire.messages import (
    HEADER_DEADLINE,
    HEADER_OUTPUTS,
    HEADER_PUBLISHED,
    HEADER_STATUS,
    JSON_CONTENT_TYPE,
    STATUS_OK,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    RequestHeaders,
    decode_inputs,
    decode_reply,
    encode_reply,
    parse_request_headers,
    queue_name,
    reply_content_type,
    request_headers,
    routing_key,
)

__all__ = [
    "ENVELOPE_CONTENT_TYPE",
    "ENVELOPE_VERSION",
    "HEADER_DEADLINE",
    "HEADER_ENVELOPE",
    "HEADER_OUTPUTS",
    "HEADER_PUBLISHED",
    "HEADER_STATUS",
    "JSON_CONTENT_TYPE",
    "STATUS_OK",
    "TENSORS_CONTENT_TYPE",
    "Member",
    "MemberReply",
    "PredictReply",
    "PredictRequest",
    "RequestHeaders",
    "decode_frame",
    "decode_inputs",
    "decode_json_inputs",
    "decode_reply",
    "decode_reply_envelope",
    "decode_request_envelope",
    "encode_frame",
    "encode_reply",
    "encode_reply_envelope",
    "encode_request_envelope",
    "parse_json_object",
    "parse_request_headers",
    "queue_name",
    "reply_content_type",
    "request_headers",
    "routing_key",
]
