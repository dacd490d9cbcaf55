"""The queue contract of docs/queue-protocol.md, as a producer in another language sees it.

Only the AMQP broker has a wire: here messages are published straight to a model version's queue
(or through the ``inferno.predict`` exchange) with plain aio-pika, the way a non-Python producer
would, and a real ``AmqpBroker`` consumes them. What must hold:

- a malformed message (bad body, unknown content type, a dtype that is not the signature's, a bad
  header, an envelope of a version the worker does not read or that does not decode) gets an
  ``invalid_input`` reply to its ``reply_to``, never reaches the handler, and is dead-lettered
  to ``inferno.dead-letter``, never retried;
- a JSON body (the HTTP v1 request shape) is decoded against the signature and served;
- without ``reply_to`` a request is still served, and nobody is answered;
- the alias routing key ``<model>`` reaches the version it is bound to, and nothing once unbound.

No test here waits for something not to happen: a refusal replaces the hand-over in the same
step, and a message that was handed over would reach the handler before any later one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import numpy as np
import orjson
import pytest

from common.errors import InvalidInput, ModelNotLoaded
from common.model.dtypes import DType
from common.transport.amqp.broker import EXCHANGE, AmqpBroker
from common.wire import (
    JSON_CONTENT_TYPE,
    STATUS_OK,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    decode_frame,
    decode_reply,
    encode_frame,
    queue_name,
    request_headers,
)
from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    HEADER_ENVELOPE,
    encode_request_envelope,
)
from harness.services import rabbitmqctl
from tests.contract.amqp_peers import (
    GOOD_BODY,
    MAX_ELEMENTS,
    SIGNATURE,
    TIMEOUT,
    Producer,
    X,
    death_of,
    serve,
    status_of,
)
from tests.contract.configs import checked, config_for
from tests.contract.test_broker_contract import Inbox


def json_body(inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


ENVELOPE = encode_request_envelope([("m1", GOOD_BODY, request_headers(time.time() + 60))])


@dataclass(frozen=True)
class Malformed:
    id: str
    body: bytes
    content_type: str | None
    says: str
    """A fragment of the error message: the check that should refuse it."""
    headers: dict[str, Any] | None = None


def _frame_header(text: bytes) -> bytes:
    return len(text).to_bytes(4, "little") + text


MALFORMED = [
    Malformed("truncated-frame", b"\x08\x00", TENSORS_CONTENT_TYPE, "Malformed tensor message"),
    Malformed("frame-header-not-json", _frame_header(b"not json"), TENSORS_CONTENT_TYPE,
              "header is not valid JSON"),
    Malformed("frame-beyond-body", _frame_header(
        b'{"tensors":[{"name":"x","dtype":"bfloat16","shape":[1,2],"offset":0,"nbytes":4}]}'),
        TENSORS_CONTENT_TYPE, "beyond the data region"),
    Malformed("frame-bfloat16-as-uint16", encode_frame({"x": X}), TENSORS_CONTENT_TYPE,
              "expected dtype bfloat16, got uint16"),
    Malformed("frame-unknown-input", encode_frame(
        {"x": X, "z": np.zeros((1, 2), np.float32)}, SIGNATURE.input_dtypes),
        TENSORS_CONTENT_TYPE, "Unexpected input(s): z"),
    Malformed("unknown-content-type", GOOD_BODY, "text/plain", "Unsupported content type"),
    Malformed("no-content-type", GOOD_BODY, None, "Unsupported content type"),
    Malformed("json-not-json", b'{"inputs": ', JSON_CONTENT_TYPE, "not valid JSON"),
    Malformed("json-wrong-dtype", json_body({"x": {"data": [[1.0, 2.0]], "dtype": "uint16"}}),
              JSON_CONTENT_TYPE, "expected dtype bfloat16, got uint16"),
    Malformed("json-ints-for-bool", json_body({"x": {"data": [[1.0, 2.0]]},
                                               "mask": {"data": [[1, 0]]}}),
              JSON_CONTENT_TYPE, "expected dtype bool"),
    Malformed("json-missing-input", json_body({"mask": {"data": [[True, False]]}}),
              JSON_CONTENT_TYPE, "Missing required input(s): x"),
    # numpy refuses to reshape an empty buffer to [0, 2**62]: a ValueError that used to escape
    # the decoder (issue 12, hostile input), now an InvalidInput like the rest.
    Malformed("json-impossible-shape", json_body({"x": {"b64": "", "shape": [0, 2**62]},
                                                  "mask": {"data": [[True, False]]}}),
              JSON_CONTENT_TYPE, "is not possible"),
    Malformed("json-nested-past-the-parser", b'{"inputs": {"x": {"data": ' + b"[" * 5000
              + b"]" * 5000 + b"}}}", JSON_CONTENT_TYPE, "not valid JSON"),
    # Admitted as the facade admits an HTTP request (issue 22): the element limit per tensor,
    # and bool bytes other than 0/1, which the JSON decoder took from b64 until then.
    Malformed("frame-over-the-element-limit", encode_frame(
        {"x": np.zeros((MAX_ELEMENTS // 2 + 1, 2), np.uint16)}, SIGNATURE.input_dtypes),
        TENSORS_CONTENT_TYPE, f"exceed the limit of {MAX_ELEMENTS} per tensor"),
    Malformed("json-over-the-element-limit", json_body(
        {"x": {"data": [[0.0, 0.0]] * (MAX_ELEMENTS // 2 + 1)}}), JSON_CONTENT_TYPE,
        f"exceed the limit of {MAX_ELEMENTS} per tensor"),
    Malformed("json-b64-bool-byte-2", json_body({"x": {"data": [[1.0, 2.0]]},
                                                 "mask": {"b64": "AgA=", "shape": [1, 2]}}),
              JSON_CONTENT_TYPE, "Input 'mask': bool bytes must be 0 or 1"),
    Malformed("frame-bool-byte-2", encode_frame(
        {"x": X, "mask": np.array([[2, 0]], np.uint8).view(np.bool_)}, SIGNATURE.input_dtypes),
        TENSORS_CONTENT_TYPE, "tensor 'mask': bool bytes must be 0 or 1"),
    Malformed("bad-deadline-header", GOOD_BODY, TENSORS_CONTENT_TYPE, "inferno-deadline",
              headers={"inferno-deadline": "soon"}),
    Malformed("bad-outputs-header", GOOD_BODY, TENSORS_CONTENT_TYPE, "inferno-outputs",
              headers={"inferno-outputs": 5}),
    Malformed("envelope-unknown-version", ENVELOPE, ENVELOPE_CONTENT_TYPE,
              "Unsupported envelope", headers={HEADER_ENVELOPE: 2}),
    Malformed("envelope-without-version", ENVELOPE, ENVELOPE_CONTENT_TYPE,
              "Unsupported envelope", headers={}),
    Malformed("envelope-not-a-frame", b"\x08\x00", ENVELOPE_CONTENT_TYPE, "Malformed envelope",
              headers={HEADER_ENVELOPE: 1}),
    Malformed("envelope-members-unnamed", encode_frame({"m1": np.frombuffer(GOOD_BODY, np.uint8)}),
              ENVELOPE_CONTENT_TYPE, "Malformed envelope", headers={HEADER_ENVELOPE: 1}),
]


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.id)
async def test_a_malformed_message_is_refused_and_dead_lettered(
        amqp: AmqpBroker, producer: Producer, model: str, case: Malformed) -> None:
    inbox = await serve(amqp, model)
    message_id = await producer.publish(model, case.body, case.content_type,
                                        headers=case.headers)

    reply = await producer.reply()
    assert reply.correlation_id == message_id
    assert status_of(reply) == "invalid_input"
    assert reply.content_type == JSON_CONTENT_TYPE
    error = decode_reply(reply.body, status_of(reply)).error
    assert isinstance(error, InvalidInput) and case.says in error.message, error

    dead = await producer.dead_letter(message_id)
    death = death_of(dead)
    assert death["reason"] == "rejected" and death["queue"] == queue_name(model, 1)
    assert dead.body == case.body  # the evidence, as it was sent

    # Never handed to the handler: the next good request is the first thing it sees.
    good_id = await producer.publish(model, GOOD_BODY, TENSORS_CONTENT_TYPE, reply=False)
    delivery = await inbox.next()
    assert delivery.request.request_id == good_id
    await delivery.ack()


async def test_a_malformed_message_without_reply_to_is_dead_lettered(
        amqp: AmqpBroker, producer: Producer, model: str) -> None:
    inbox = await serve(amqp, model)
    message_id = await producer.publish(model, b"garbage", TENSORS_CONTENT_TYPE, reply=False)
    dead = await producer.dead_letter(message_id)
    assert death_of(dead)["reason"] == "rejected"
    good_id = await producer.publish(model, GOOD_BODY, TENSORS_CONTENT_TYPE, reply=False)
    assert (await inbox.next()).request.request_id == good_id
    assert producer.replies.empty()  # there was nowhere to answer


@pytest.mark.parametrize("content_type", [JSON_CONTENT_TYPE, "application/json; charset=utf-8"])
async def test_a_json_request_is_decoded_against_the_signature(
        amqp: AmqpBroker, producer: Producer, model: str, content_type: str) -> None:
    inbox = await serve(amqp, model)
    deadline = time.time() + TIMEOUT
    body = json_body({"x": {"data": [[1.5, -2.0]]}, "mask": {"data": [[True, False]]}},
                     outputs=["y"], codec="base64", timeout_ms=1)  # the last two are ignored
    message_id = await producer.publish(model, body, content_type,
                                        headers=request_headers(deadline, ["n"]))

    delivery = await inbox.next()
    request = delivery.request
    assert (request.model, request.version, request.request_id) == (model, 1, message_id)
    assert request.deadline == pytest.approx(deadline, abs=0.002)
    assert request.checked.outputs == ["y"]  # the body's selection wins over the header's
    assert request.inputs["x"].dtype == np.uint16  # bfloat16 bit patterns
    np.testing.assert_array_equal(request.inputs["x"], X)
    np.testing.assert_array_equal(request.inputs["mask"], [[True, False]])

    await delivery.reply(PredictReply({"y": X, "n": np.array([7], np.int64)}))
    await delivery.ack()
    reply = await producer.reply()
    assert reply.correlation_id == message_id
    assert status_of(reply) == STATUS_OK and reply.content_type == TENSORS_CONTENT_TYPE
    # Labelled with the signature's dtypes: bfloat16, not the uint16 numpy holds it as.
    outputs, _ = decode_frame(reply.body, SIGNATURE.output_dtypes)
    np.testing.assert_array_equal(outputs["y"], X)
    np.testing.assert_array_equal(outputs["n"], [7])


async def test_a_tensor_request_without_deadline_or_reply_to(
        amqp: AmqpBroker, producer: Producer, model: str) -> None:
    inbox = await serve(amqp, model)
    body = encode_frame({"x": X, "mask": np.array([[False, True]])}, SIGNATURE.input_dtypes)
    message_id = await producer.publish(model, body, TENSORS_CONTENT_TYPE, reply=False,
                                        headers={"inferno-outputs": "n, y"})
    delivery = await inbox.next()
    request = delivery.request
    assert request.request_id == message_id
    assert request.checked.outputs == ["n", "y"]
    # No inferno-deadline header: the worker gives it an hour (docs/queue-protocol.md).
    assert request.deadline == pytest.approx(time.time() + 3600, abs=60)
    np.testing.assert_array_equal(request.inputs["mask"], [[False, True]])
    # Fire-and-forget: replying is a no-op, not an error.
    await delivery.reply(PredictReply({"y": X, "n": np.array([1], np.int64)}))
    await delivery.ack()
    assert producer.replies.empty()


async def test_the_alias_routes_to_the_bound_version(amqp: AmqpBroker, producer: Producer,
                                                     model: str) -> None:
    exchange = await producer.channel.get_exchange(EXCHANGE)
    inboxes = {}
    for version in (1, 2):
        await amqp.declare_queue(model, version, max_length=10)
        inboxes[version] = Inbox()
        await amqp.consume(config_for(model, SIGNATURE, version), inboxes[version], prefetch=10)

    async def publish_to_alias() -> str:
        message_id = uuid.uuid4().hex
        await exchange.publish(
            aio_pika.Message(GOOD_BODY, content_type=TENSORS_CONTENT_TYPE,
                             message_id=message_id, expiration=TIMEOUT),
            routing_key=model, mandatory=True, timeout=2)
        return message_id

    # Nothing bound: unroutable, which a producer sees as a returned message.
    with pytest.raises(aio_pika.exceptions.PublishError):
        await publish_to_alias()

    await amqp.bind_alias(model, 1)
    sent = await publish_to_alias()
    assert (await inboxes[1].next()).request.request_id == sent

    await amqp.bind_alias(model, 2)  # activate version 2: bind it, then unbind 1
    await amqp.unbind_alias(model, 1)
    sent = await publish_to_alias()
    delivery = await inboxes[2].next()
    assert delivery.request.request_id == sent and delivery.request.version == 2
    # Version 1 got nothing more: its next delivery is this pinned one.
    task = asyncio.create_task(amqp.request(pinned(model, 1)))
    first = await inboxes[1].next()
    assert first.request.request_id == "pinned"
    await first.reply(PredictReply({"y": X, "n": np.array([0], np.int64)}))
    assert (await asyncio.wait_for(task, 2)).error is None

    await amqp.unbind_alias(model, 2)
    with pytest.raises(aio_pika.exceptions.PublishError):
        await publish_to_alias()
    await amqp.delete_queue(model, 2)
    with pytest.raises(ModelNotLoaded):
        await asyncio.wait_for(amqp.request(pinned(model, 2)), 2)


def pinned(model: str, version: int) -> PredictRequest:
    """A request as the facade sends it: to one version, through ``AmqpBroker.request``."""
    return PredictRequest(model=model, version=version, inputs={"x": X},
                          checked=checked(model, SIGNATURE, {"x": X}),
                          deadline=time.time() + TIMEOUT, request_id="pinned",
                          dtypes={"x": DType.BFLOAT16})


async def channels_in(vhost: str) -> int:
    """Open channels of every connection to ``vhost``, as the broker counts them."""
    rows = await asyncio.to_thread(rabbitmqctl, "-q", "list_connections", "vhost", "channels")
    return sum(int(row.split()[1]) for row in rows.splitlines()
               if row.split() and row.split()[0] == vhost)


async def test_closing_a_subscription_frees_its_channel_and_returns_what_it_held(
        amqp: AmqpBroker, producer: Producer, model: str, amqp_url: str) -> None:
    vhost = urlsplit(amqp_url).path.lstrip("/")
    await amqp.declare_queue(model, 1, max_length=10)
    before = await channels_in(vhost)
    held = Inbox()
    subscription = await amqp.consume(config_for(model, SIGNATURE), held, prefetch=10)
    # A channel of its own for the queue (its prefetch) and one for its retry queue, and the
    # broker's first consumer opens the one that moves retries and answers poison requests and
    # the one that listens for cancel notices.
    assert await channels_in(vhost) == before + 4
    sent = await producer.publish(model, GOOD_BODY, TENSORS_CONTENT_TYPE)
    assert (await held.next()).request.request_id == sent  # handed out, never settled

    await subscription.close()

    assert await channels_in(vhost) == before + 2  # a worker that loads and unloads leaks none
    again = Inbox()
    await amqp.consume(config_for(model, SIGNATURE), again, prefetch=10)
    delivery = await again.next()
    # The one message published, handed out again (through the retry queue: redelivered).
    assert delivery.request.request_id == sent and delivery.isolated
