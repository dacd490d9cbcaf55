"""Poison requests on the real broker, a worker's broker against a plain producer
(docs/queue-protocol.md, "Poison requests").

A worker "dies" here by closing its broker's connection with a delivery in hand: RabbitMQ returns
what it held to the queue, as it does for a process killed mid-batch. A redelivered envelope
moves to the retry queue as one message per member, each handed over alone and answered alone;
a request that kills every worker holding it is dead-lettered by the quorum queue's delivery
limit, and a worker's poison responder answers its caller with ``poison_request`` (an
envelope's callers too, one reply envelope). tests/distributed/test_poison.py does the same with
processes that really die.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import numpy as np
import pytest

from common.errors import PoisonRequest
from common.transport.amqp.broker import AmqpBroker
from common.transport.amqp.retry import retry_queue_name
from common.wire import (
    ENVELOPE_CONTENT_TYPE,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    decode_reply,
    decode_reply_envelope,
    encode_request_envelope,
    request_headers,
)
from common.wire.envelope import HEADER_ENVELOPE
from tests.contract.amqp_peers import (
    GOOD_BODY,
    SIGNATURE,
    TIMEOUT,
    Producer,
    X,
    death_of,
    status_of,
)
from tests.contract.configs import config_for
from tests.contract.test_amqp_envelope_contract import member_headers, publish_envelope
from tests.contract.test_broker_contract import Inbox, quiet

Workers = Callable[..., Awaitable[tuple[AmqpBroker, Inbox]]]


@pytest.fixture
async def workers(amqp_url: str, model: str) -> AsyncIterator[Workers]:
    """``await workers(queue_type=..., delivery_limit=...)``: a started worker's broker
    consuming the model's version 1, and the inbox its deliveries go to."""
    started: list[AmqpBroker] = []

    async def start(**settings: object) -> tuple[AmqpBroker, Inbox]:
        broker = AmqpBroker(amqp_url, **settings)  # type: ignore[arg-type]
        await broker.start()
        started.append(broker)
        await broker.declare_queue(model, 1, max_length=10)
        inbox = Inbox()
        await broker.consume(config_for(model, SIGNATURE), inbox, prefetch=10)
        return broker, inbox

    yield start
    for broker in reversed(started):
        await broker.aclose()  # closing twice is harmless


async def test_a_redelivered_envelope_moves_to_the_retry_queue_one_message_per_member(
        workers: Workers, producer: Producer, model: str) -> None:
    first, held = await workers()
    late = {**request_headers(time.time() - 1), "message_id": "late"}
    await publish_envelope(producer, model, [
        ("a", GOOD_BODY, member_headers("first")), ("b", GOOD_BODY, member_headers("second")),
        ("c", GOOD_BODY, late)])
    assert [(await held.next()).isolated for _ in range(3)] == [False] * 3
    await first.aclose()  # the worker dies with the envelope in hand

    second, inbox = await workers()
    answered = []
    for _ in range(2):  # one in hand at a time: the next comes once this one is settled
        delivery = await inbox.next()
        assert delivery.isolated  # a batch of its own
        answered.append(delivery.request.request_id)
        await delivery.reply(PredictReply({"y": X, "n": np.array([len(answered)], np.int64)}))
        await delivery.ack()
    assert answered == ["first", "second"]  # c was past its deadline: dropped, never computed

    # Each member is answered alone, to its own correlation id, as a single reply.
    replies = {}
    for _ in range(2):
        message = await producer.reply()
        assert message.content_type == TENSORS_CONTENT_TYPE
        replies[message.correlation_id] = int(decode_reply(
            message.body, status_of(message)).result()["n"][0])
    assert replies == {"a": 1, "b": 2}
    await quiet()
    assert inbox.empty() and await second.queue_depth(model, 1) == 0  # the envelope was acked


async def test_a_request_that_kills_every_worker_is_answered_poison_request(
        workers: Workers, producer: Producer, amqp_url: str, model: str) -> None:
    quorum = {"queue_type": "quorum", "delivery_limit": 1}
    worker, inbox = await workers(**quorum)
    sent = await producer.publish(model, GOOD_BODY, TENSORS_CONTENT_TYPE)

    # Delivered from the version's queue, then (moved on redelivery) from the retry queue
    # until the delivery limit: once more than the limit. Each worker dies holding it.
    isolated = []
    for _ in range(3):
        delivery = await inbox.next()
        assert delivery.request.request_id == sent
        isolated.append(delivery.isolated)
        await worker.aclose()
        worker, inbox = await workers(**quorum)
    assert isolated == [False, True, True]

    # A live worker's responder answers the caller, typed, at once.
    reply = await producer.reply()
    assert reply.correlation_id == sent and status_of(reply) == "poison_request"
    error = decode_reply(reply.body, status_of(reply)).error
    assert isinstance(error, PoisonRequest) and "delivered 2 times" in error.message
    # The operators' dead-letter queue keeps it, with why and from where.
    death = death_of(await producer.dead_letter(sent))
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == retry_queue_name(model, 1)


async def test_an_envelope_over_the_delivery_limit_answers_every_member(
        workers: Workers, producer: Producer, model: str) -> None:
    quorum = {"queue_type": "quorum", "delivery_limit": 1}
    first, inbox = await workers(**quorum)
    # An envelope in the retry queue (a producer may put one there): never moved again, so the
    # delivery limit dead-letters it whole.
    await producer.channel.default_exchange.publish(
        aio_pika.Message(encode_request_envelope([("a", GOOD_BODY, member_headers("one")),
                                                  ("b", GOOD_BODY, member_headers("two"))]),
                         content_type=ENVELOPE_CONTENT_TYPE, correlation_id="env",
                         message_id="env", reply_to=producer.reply_to, expiration=TIMEOUT,
                         headers={HEADER_ENVELOPE: 1}),
        routing_key=retry_queue_name(model, 1))
    worker = first
    for _ in range(2):
        assert {(await inbox.next()).request.request_id for _ in range(2)} == {"one", "two"}
        await worker.aclose()
        worker, inbox = await workers(**quorum)

    reply = await producer.reply()
    assert reply.correlation_id == "env" and reply.content_type == ENVELOPE_CONTENT_TYPE
    members = {m.correlation_id: decode_reply(m.body, m.status).error
               for m in decode_reply_envelope(reply.body)}
    assert set(members) == {"a", "b"}
    assert all(isinstance(e, PoisonRequest) for e in members.values())


async def test_classic_queues_redeliver_a_poison_request_until_it_expires(
        workers: Workers, producer: Producer, model: str) -> None:
    worker, inbox = await workers()  # classic: no delivery count, no limit
    sent = await producer.publish(model, GOOD_BODY, TENSORS_CONTENT_TYPE)
    isolated = []
    for _ in range(4):  # more deaths than any quorum limit of 1 or 2 would allow
        delivery = await inbox.next()
        assert delivery.request.request_id == sent
        isolated.append(delivery.isolated)
        await worker.aclose()
        worker, inbox = await workers()
    assert isolated == [False, True, True, True]  # alone from the retry queue, every time
    assert (await inbox.next()).request.request_id == sent  # and again: until its expiration
    await quiet()
    assert producer.replies.empty()  # nobody answers it: its caller times out (504)
