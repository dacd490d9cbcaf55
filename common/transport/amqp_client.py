"""The facade's side of the AMQP broker: publish a request, await its reply.

One publishing channel with publisher confirms (a full queue nacks: ``Overloaded``; an
unroutable ``mandatory`` publish comes back: ``ModelNotLoaded``) and one exclusive reply queue per
process, declared and consumed once on first use, futures keyed by correlation id. Requests and
replies go through aiormq (aio-pika's protocol layer); aio-pika keeps the connection, the channel
and its recovery. After a reconnection the reply queue is consumed again; the requests that were
waiting when the connection went fail at once (their replies went with the exclusive queue).

Every publish and every wait is bounded by the request's deadline (a publish during an outage can
hang until the connection is back: aio-pika #636). ``AmqpBroker`` (common/transport/amqp_broker.py)
owns the connection and composes this client with the topology and consumers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from common.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    InfernoError,
    ModelNotLoaded,
    Overloaded,
)
from common.transport.amqp_errors import broker_errors
from common.transport.broker import fail_at_deadline
from common.wire.framing import encode_frame
from common.wire.messages import (
    HEADER_STATUS,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    decode_reply,
    request_headers,
    routing_key,
)

__all__ = ["AmqpClient"]

log = logging.getLogger(__name__)


class AmqpClient:
    """Requests to ``exchange`` and their replies, on a connection the broker opened."""

    def __init__(self, exchange: str, persistent: bool = False) -> None:
        self._exchange = exchange
        self._delivery_mode = 2 if persistent else 1
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        """The publisher's protocol channel, replaced after a reconnection."""
        self._reply_name = f"inferno.reply.{socket.gethostname()}.{os.getpid()}.{id(self):x}"
        self._reply_declared = False
        self._reply_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[PredictReply]] = {}
        self._ids = itertools.count(1)

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Open the publishing channel on ``connection`` and declare the exchange it publishes
        to. Raises aio-pika's errors: the caller converts them (``broker_errors``)."""
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_lost)
        self._publisher = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
        await self._publisher.declare_exchange(
            self._exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        self._publish_channel = await self._publisher.get_underlay_channel()
        self._publisher.reopen_callbacks.add(self._on_publisher_reopened)

    def fail_pending(self, error: InfernoError) -> None:
        """Fail every request still waiting for its reply (the connection is closing)."""
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)

    async def _declare_replies(self) -> None:
        """The process's reply queue, declared and consumed once, on first use (workers that
        never call ``request`` have none). aio-pika declares it again after a reconnection
        (the exclusive queue died with the old connection); ``_on_publisher_reopened`` consumes
        it again."""
        async with self._reply_lock:
            if not self._reply_declared:
                assert self._publisher is not None, "broker not started"
                await self._publisher.declare_queue(
                    self._reply_name, exclusive=True, auto_delete=True)
                await self._consume_replies()
                self._reply_declared = True

    async def _consume_replies(self) -> None:
        assert self._publisher is not None
        channel = await self._publisher.get_underlay_channel()
        await channel.basic_consume(self._reply_name, self._on_reply, no_ack=True)

    async def _on_publisher_reopened(self, *_: Any) -> None:
        assert self._publisher is not None
        self._publish_channel = await self._publisher.get_underlay_channel()
        if self._reply_declared:
            try:
                await self._consume_replies()
            except Exception:
                log.exception("could not consume the reply queue again after reconnecting")

    async def request(self, request: PredictRequest) -> PredictReply:
        """Publish to the request's model version and wait for the reply until its deadline."""
        channel = self._publish_channel
        if (channel is None or channel.is_closed or self._connection is None
                or self._connection.is_closed):
            raise BrokerUnavailable("Message broker unavailable: not connected")
        remaining = request.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("The request's deadline passed before it was queued")
        correlation_id = f"{next(self._ids):x}"
        future: asyncio.Future[PredictReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        future.add_done_callback(lambda _: self._pending.pop(correlation_id, None))
        timer = fail_at_deadline(future, request)
        try:
            with broker_errors():
                if not self._reply_declared:
                    await self._declare_replies()
                properties = Basic.Properties(
                    content_type=TENSORS_CONTENT_TYPE, correlation_id=correlation_id,
                    reply_to=self._reply_name,
                    message_id=request.request_id or correlation_id,
                    headers=request_headers(request.deadline, request.checked.outputs,
                                            published=request.published or time.time()),
                    expiration=str(max(1, int(remaining * 1000))),
                    delivery_mode=self._delivery_mode)
                await self._publish(channel, request, properties, remaining)
            return await future
        finally:
            timer.cancel()
            future.cancel()

    async def _publish(self, channel: aiormq.abc.AbstractChannel, request: PredictRequest,
                       properties: Basic.Properties, remaining: float) -> None:
        try:
            await channel.basic_publish(
                encode_frame(request.inputs, request.dtypes), exchange=self._exchange,
                routing_key=routing_key(request.model, request.version),
                properties=properties, mandatory=True, timeout=remaining)
        except aiormq.exceptions.PublishError:
            raise ModelNotLoaded(
                f"Model '{request.model}' version {request.version} is not loaded "
                f"(no queue for it)") from None
        except aiormq.exceptions.DeliveryError:
            raise Overloaded(
                f"Model '{request.model}' version {request.version} is overloaded: "
                f"its queue is full") from None
        except TimeoutError:
            raise BrokerUnavailable(
                "Message broker did not confirm the request before its deadline") from None

    async def _on_reply(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        correlation_id = properties.correlation_id or ""
        future = self._pending.get(correlation_id)
        if future is None or future.done():
            # A late or duplicate reply (after a redelivery): nobody waits for it.
            log.debug("reply %s dropped: nobody waits for it", correlation_id)
            return
        status = (properties.headers or {}).get(HEADER_STATUS)
        future.set_result(decode_reply(
            message.body, status if isinstance(status, (str, bytes)) else None))

    def _on_connection_lost(self, *_: Any) -> None:
        # Replies to the lost exclusive queue are gone with it: fail the waiters now rather
        # than at their deadlines.
        self.fail_pending(BrokerUnavailable("Lost the connection to the message broker"))
