"""The AMQP peers of the wire contract tests: a worker's consuming ``AmqpBroker`` (``amqp``) and a
plain aio-pika producer (``producer``) that watches the dead-letter queue, with the signature they
exchange requests for. conftest.py registers the two fixtures."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import numpy as np
import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.model.dtypes import float_to_bf16_bits
from common.model.signature import Signature
from common.transport.amqp.broker import DEAD_LETTER_QUEUE, AmqpBroker
from common.wire import HEADER_STATUS, encode_frame, queue_name, request_headers
from tests.contract.configs import config_for
from tests.contract.test_broker_contract import Inbox

# bfloat16 on purpose: its arrays are uint16 in numpy, but a producer must label them bfloat16.
SIGNATURE = Signature.model_validate({
    "inputs": [{"name": "x", "dtype": "bfloat16", "shape": ["batch", 2]},
               {"name": "mask", "dtype": "bool", "shape": ["batch", 2], "optional": True}],
    "outputs": [{"name": "y", "dtype": "bfloat16", "shape": ["batch", 2]},
                {"name": "n", "dtype": "int64", "shape": ["batch"]}],
})
X = float_to_bf16_bits(np.array([[1.5, -2.0]], np.float32))
GOOD_BODY = encode_frame({"x": X}, SIGNATURE.input_dtypes)
TIMEOUT = 5.0
MAX_ELEMENTS = 64
"""The consuming broker's element limit per tensor (``INFERNO_MAX_ELEMENTS_PER_TENSOR``)."""


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[AmqpBroker]:
    """The consuming side: a worker's broker."""
    broker = AmqpBroker(amqp_url, max_elements=MAX_ELEMENTS)
    await broker.start()  # declares the exchange, inferno.dlx and inferno.dead-letter
    yield broker
    await broker.aclose()


@dataclass
class Producer:
    """A plain aio-pika producer with its own reply queue, watching the dead-letter queue."""

    channel: aio_pika.abc.AbstractChannel
    replies: asyncio.Queue[AbstractIncomingMessage]
    reply_to: str
    dead: dict[str, AbstractIncomingMessage]
    dead_arrived: asyncio.Event

    async def publish(self, model: str, body: bytes, content_type: str | None, *,
                      headers: dict[str, Any] | None = None, reply: bool = True,
                      message_id: str = "") -> str:
        """Publish straight to version 1's queue (default exchange); return the message id."""
        message_id = message_id or uuid.uuid4().hex
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, content_type=content_type, message_id=message_id,
                             correlation_id=message_id,
                             reply_to=self.reply_to if reply else None,
                             headers=headers if headers is not None
                             else request_headers(time.time() + TIMEOUT),
                             expiration=TIMEOUT),
            routing_key=queue_name(model, 1))
        return message_id

    async def reply(self) -> AbstractIncomingMessage:
        return await asyncio.wait_for(self.replies.get(), 2)

    async def dead_letter(self, message_id: str) -> AbstractIncomingMessage:
        """The dead-lettered copy of a message (the queue is shared: others' are skipped)."""
        async def arrived() -> AbstractIncomingMessage:
            while message_id not in self.dead:
                self.dead_arrived.clear()
                await self.dead_arrived.wait()
            return self.dead[message_id]
        return await asyncio.wait_for(arrived(), 2)


@pytest.fixture
async def producer(amqp: AmqpBroker, amqp_url: str) -> AsyncIterator[Producer]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    replies: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    reply_queue = await channel.declare_queue(exclusive=True)  # server-named
    await reply_queue.consume(replies.put, no_ack=True)
    dead: dict[str, AbstractIncomingMessage] = {}
    dead_arrived = asyncio.Event()

    async def on_dead(message: AbstractIncomingMessage) -> None:
        dead[message.message_id or ""] = message
        dead_arrived.set()

    dead_queue = await channel.get_queue(DEAD_LETTER_QUEUE)
    await dead_queue.consume(on_dead, no_ack=True)
    yield Producer(channel, replies, reply_queue.name, dead, dead_arrived)
    await connection.close()


async def serve(broker: AmqpBroker, model: str) -> Inbox:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await broker.consume(config_for(model, SIGNATURE), inbox, prefetch=10)
    return inbox


def status_of(message: AbstractIncomingMessage) -> str:
    status = (message.headers or {}).get(HEADER_STATUS)
    return status.decode() if isinstance(status, bytes) else str(status)


def death_of(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The one ``x-death`` entry RabbitMQ adds to a message it dead-letters."""
    deaths: Any = (message.headers or {}).get("x-death")
    assert isinstance(deaths, list) and len(deaths) == 1, deaths
    return dict(deaths[0])
