"""Envelopes on the real broker (docs/queue-protocol.md, "Envelopes"), from both ends.

The facade's side, against a bare aio-pika consumer that plays the worker: the requests of one
event-loop turn go together at its end, bounded by ``coalesce_rows``, and a lone request as a
plain message; a reply envelope answers each member by its correlation id; a single reply to the
envelope's id (a worker that cannot read it) and a full queue fail every member at once, not at
their deadlines.

The worker's side, against a plain producer: each member reaches the handler as a delivery of its
own, a member that does not pass validation is answered alone, the answers come back in reply
envelopes, the message is acknowledged once all are settled, and a member given back requeues
the whole envelope: redelivered, its members move to the retry queue, one message each, and
each is delivered again alone (tests/contract/test_amqp_poison_contract.py has the rest).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import numpy as np
import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.errors import InvalidInput, Overloaded, WorkerFailed
from common.model.dtypes import DType
from common.transport.amqp.broker import AmqpBroker
from common.wire import (
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    decode_frame,
    decode_reply,
    encode_frame,
    encode_reply,
    queue_name,
    request_headers,
)
from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    HEADER_ENVELOPE,
    decode_reply_envelope,
    decode_request_envelope,
    encode_reply_envelope,
    encode_request_envelope,
)
from tests.contract.amqp_peers import GOOD_BODY, SIGNATURE, TIMEOUT, Producer, X
from tests.contract.configs import checked, config_for
from tests.contract.test_broker_contract import Inbox


def numbered(model: str, i: int, timeout: float = TIMEOUT) -> PredictRequest:
    mask = np.array([[i % 2 == 0, True]])
    inputs = {"x": X, "mask": mask}
    return PredictRequest(model=model, version=1, inputs=inputs,
                          checked=checked(model, SIGNATURE, inputs),
                          deadline=time.time() + timeout, request_id=f"req-{i}",
                          dtypes={"x": DType.BFLOAT16})


class RawWorker:
    """The test as the worker: the version's queue consumed with bare aio-pika."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self.messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def next(self) -> AbstractIncomingMessage:
        return await asyncio.wait_for(self.messages.get(), 2)

    async def answer(self, to: AbstractIncomingMessage, body: bytes, headers: dict[str, Any],
                     content_type: str) -> None:
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, content_type=content_type, headers=headers,
                             correlation_id=to.correlation_id),
            routing_key=to.reply_to or "")


@pytest.fixture
async def raw_worker(amqp: AmqpBroker, amqp_url: str, model: str) -> AsyncIterator[RawWorker]:
    await amqp.declare_queue(model, 1, max_length=100)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    worker = RawWorker(channel)
    queue = await channel.get_queue(queue_name(model, 1))
    await queue.consume(worker.messages.put, no_ack=True)
    yield worker
    await connection.close()


def check_member(body: memoryview, number: int) -> None:
    """A member's body is the tensor body of the ``numbered`` request it carries."""
    arrays, _ = decode_frame(body, SIGNATURE.input_dtypes)
    np.testing.assert_array_equal(arrays["x"], X)
    np.testing.assert_array_equal(arrays["mask"], [[number % 2 == 0, True]])


async def warm(amqp: AmqpBroker, worker: RawWorker, model: str) -> None:
    """One request answered: the reply queue is declared, so the next ones go straight on."""
    task = asyncio.create_task(amqp.request(numbered(model, 0)))
    message = await worker.next()
    body, status = encode_reply(PredictReply({"n": np.array([0], np.int64)}))
    await worker.answer(message, body, {"inferno-status": status}, TENSORS_CONTENT_TYPE)
    await asyncio.wait_for(task, 2)


async def test_requests_of_one_turn_share_messages_bounded_by_rows(
        amqp: AmqpBroker, raw_worker: RawWorker, model: str) -> None:
    await warm(amqp, raw_worker, model)
    tasks = [asyncio.create_task(amqp.request(numbered(model, i), coalesce_rows=2))
             for i in range(1, 8)]

    # Seven requests decoded in one turn, two rows to a message; the group of one left over goes
    # as a plain message.
    messages = [await raw_worker.next() for _ in range(4)]
    assert [m.content_type for m in messages] == [ENVELOPE_CONTENT_TYPE] * 3 + [
        TENSORS_CONTENT_TYPE]
    envelopes = [decode_request_envelope(m.body) for m in messages[:3]]
    assert all((m.headers or {}).get(HEADER_ENVELOPE) == 1 for m in messages[:3])
    ids = [[member.headers["message_id"] for member in members] for members in envelopes]
    assert ids == [["req-1", "req-2"], ["req-3", "req-4"], ["req-5", "req-6"]]
    assert messages[3].message_id == "req-7"
    # The message expires with its latest member; each member keeps its own deadline.
    for message, members in zip(messages, envelopes, strict=False):
        deadlines = [member.headers["inferno-deadline"] for member in members]
        assert (message.headers or {})["inferno-deadline"] == max(deadlines)

    # Answer each member with its own number, each envelope in one reply envelope.
    body, status = encode_reply(PredictReply({"n": np.array([7], np.int64)}))
    await raw_worker.answer(messages[3], body, {"inferno-status": status}, TENSORS_CONTENT_TYPE)
    for message, members in zip(messages, envelopes, strict=False):
        replies = []
        for member in members:
            number = int(member.headers["message_id"].split("-")[1])
            check_member(member.body, number)
            body, status = encode_reply(PredictReply({"n": np.array([number], np.int64)}))
            replies.append((member.correlation_id, body, status))
        await raw_worker.answer(message, encode_reply_envelope(replies), {HEADER_ENVELOPE: 1},
                                ENVELOPE_CONTENT_TYPE)

    results = await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert [int(r.result()["n"][0]) for r in results] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_lone_request_goes_as_a_plain_message(
        amqp: AmqpBroker, raw_worker: RawWorker, model: str) -> None:
    await warm(amqp, raw_worker, model)
    task = asyncio.create_task(amqp.request(numbered(model, 1), coalesce_rows=8))
    message = await raw_worker.next()
    assert message.content_type == TENSORS_CONTENT_TYPE and message.message_id == "req-1"
    check_member(memoryview(message.body), 1)
    body, status = encode_reply(PredictReply({"n": np.array([1], np.int64)}))
    await raw_worker.answer(message, body, {"inferno-status": status}, TENSORS_CONTENT_TYPE)
    assert int((await asyncio.wait_for(task, 2)).result()["n"][0]) == 1


async def test_a_refused_envelope_fails_every_member_at_once(
        amqp: AmqpBroker, raw_worker: RawWorker, model: str) -> None:
    await warm(amqp, raw_worker, model)
    tasks = [asyncio.create_task(amqp.request(numbered(model, i, timeout=30), coalesce_rows=8))
             for i in range(1, 4)]
    envelope = await raw_worker.next()
    assert envelope.content_type == ENVELOPE_CONTENT_TYPE

    # An older worker's answer to a content type it does not know: one error, to the envelope.
    body, status = encode_reply(PredictReply(error=InvalidInput("Unsupported content type")))
    await raw_worker.answer(envelope, body, {"inferno-status": status}, "application/json")

    started = time.monotonic()
    for task in tasks:
        with pytest.raises(WorkerFailed, match="could not read the request's envelope"):
            await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 2  # at once, not at their 30 s deadlines


async def test_a_full_queue_refuses_every_member_of_an_envelope(
        amqp: AmqpBroker, producer: Producer, model: str) -> None:
    await amqp.declare_queue(model, 1, max_length=1)  # nobody consumes it
    await producer.publish(model, GOOD_BODY, TENSORS_CONTENT_TYPE, reply=False)  # now full
    tasks = [asyncio.create_task(amqp.request(numbered(model, i), coalesce_rows=8))
             for i in range(3)]
    # One envelope, refused by the full queue: all three are told at once.
    for task in tasks:
        with pytest.raises(Overloaded):
            await asyncio.wait_for(task, 2)


async def publish_envelope(producer: Producer, model: str,
                           members: list[tuple[str, bytes, dict[str, Any]]]) -> str:
    envelope_id = "env-" + "-".join(cid for cid, _, _ in members)
    await producer.channel.default_exchange.publish(
        aio_pika.Message(encode_request_envelope(members), content_type=ENVELOPE_CONTENT_TYPE,
                         correlation_id=envelope_id, message_id=envelope_id,
                         reply_to=producer.reply_to, expiration=TIMEOUT,
                         headers={HEADER_ENVELOPE: 1}),
        routing_key=queue_name(model, 1))
    return envelope_id


def member_headers(message_id: str, outputs: list[str] | None = None) -> dict[str, Any]:
    return {**request_headers(time.time() + TIMEOUT, outputs), "message_id": message_id}


async def replies_to(producer: Producer, envelope_id: str, members: int
                     ) -> dict[str, PredictReply]:
    """The member replies of an envelope, however many reply envelopes carry them."""
    replies: dict[str, PredictReply] = {}
    while len(replies) < members:
        message = await producer.reply()
        assert message.correlation_id == envelope_id
        assert message.content_type == ENVELOPE_CONTENT_TYPE
        for member in decode_reply_envelope(message.body):
            replies[member.correlation_id] = decode_reply(member.body, member.status)
    return replies


async def test_an_envelopes_members_are_delivered_one_by_one_and_answered_together(
        amqp: AmqpBroker, producer: Producer, model: str) -> None:
    await amqp.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    subscription = await amqp.consume(config_for(model, SIGNATURE), inbox, prefetch=10)
    bad = encode_frame({"x": X, "z": np.zeros((1, 2), np.float32)}, SIGNATURE.input_dtypes)
    envelope_id = await publish_envelope(producer, model, [
        ("a", GOOD_BODY, member_headers("first")),
        ("b", bad, member_headers("unknown-input")),
        ("c", GOOD_BODY, member_headers("second", ["n"]))])

    first, second = await inbox.next(), await inbox.next()
    assert [first.request.request_id, second.request.request_id] == ["first", "second"]
    assert second.request.checked.outputs == ["n"]  # each member keeps its own headers
    for delivery, n in ((first, 1), (second, 2)):
        await delivery.reply(PredictReply({"y": X, "n": np.array([n], np.int64)}))
        await delivery.ack()

    replies = await replies_to(producer, envelope_id, 3)
    assert int(replies["a"].result()["n"][0]) == 1
    assert int(replies["c"].result()["n"][0]) == 2
    with pytest.raises(InvalidInput, match="Unexpected input"):
        replies["b"].result()
    # Acknowledged once, after its replies: closing the consumer gives nothing back.
    await subscription.close()
    assert await amqp.queue_depth(model, 1) == 0


async def test_a_member_given_back_requeues_the_whole_envelope(
        amqp: AmqpBroker, producer: Producer, model: str) -> None:
    await amqp.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await amqp.consume(config_for(model, SIGNATURE), inbox, prefetch=10)
    envelope_id = await publish_envelope(producer, model, [
        ("a", GOOD_BODY, member_headers("first")), ("b", GOOD_BODY, member_headers("second"))])

    first, second = await inbox.next(), await inbox.next()
    await first.reply(PredictReply({"y": X, "n": np.array([1], np.int64)}))
    await first.ack()
    await second.reject(requeue=True)  # e.g. the worker stops before its batch runs
    assert set(await replies_to(producer, envelope_id, 1)) == {"a"}

    # At-least-once: redelivered whole, the envelope moves to the retry queue as one message
    # per member, both computed again, each alone (one in hand at a time) and answered alone.
    again = []
    for _ in range(2):
        delivery = await inbox.next()
        assert delivery.isolated
        again.append(delivery.request.request_id)
        await delivery.reply(PredictReply({"y": X, "n": np.array([2], np.int64)}))
        await delivery.ack()
    assert again == ["first", "second"]
    replies = {}
    for _ in range(2):
        message = await producer.reply()
        assert message.content_type == TENSORS_CONTENT_TYPE, message.content_type
        replies[message.correlation_id] = decode_reply(
            message.body, (message.headers or {}).get("inferno-status"))  # type: ignore[arg-type]
    assert {cid: int(r.result()["n"][0]) for cid, r in replies.items()} == {"a": 2, "b": 2}
