"""The distributed broker: RabbitMQ through aio-pika, the message contract of
docs/queue-protocol.md.

Facade side: one publishing channel with publisher confirms (a full queue nacks: ``Overloaded``;
an unroutable ``mandatory`` publish comes back: ``ModelNotLoaded``) and one exclusive reply queue
per process, consumed once, futures keyed by correlation id. Worker side
(``common.transport.amqp_consumer``): a channel per consumed queue with its own prefetch; replies
go to the request's ``reply_to`` through the default exchange, and the request is acknowledged
only after its reply is published.
As on the worker side, requests and replies go through aiormq (aio-pika's protocol layer) and
aio-pika keeps the connection, the channels, the topology and their recovery.

Every aio-pika/aiormq failure is turned into ``BrokerUnavailable`` at this boundary, and every
publish and every wait is bounded by the request's deadline (a publish during an outage can hang
until the connection is back: aio-pika #636).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from collections.abc import Iterator
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
from common.model.signature import Signature
from common.transport.amqp_consumer import QueueConsumer
from common.transport.broker import Broker, DeliveryHandler, Subscription, fail_at_deadline
from common.wire.messages import (
    HEADER_STATUS,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    decode_reply,
    encode_frame,
    queue_name,
    request_headers,
    routing_key,
)

__all__ = ["AmqpBroker"]

log = logging.getLogger(__name__)

EXCHANGE = "inferno.predict"
DEAD_LETTER_EXCHANGE = "inferno.dlx"
DEAD_LETTER_QUEUE = "inferno.dead-letter"
RECONNECT_INTERVAL_S = 1.0  # aio-pika's default of 5 s is a long outage for a serving path


@contextlib.contextmanager
def broker_errors() -> Iterator[None]:
    """Turn the AMQP client's exceptions into ``BrokerUnavailable``."""
    try:
        yield
    except InfernoError:
        raise
    except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError,
            aiormq.exceptions.ChannelInvalidStateError, RuntimeError) as exc:
        raise BrokerUnavailable(f"Message broker unavailable: {type(exc).__name__}: {exc}"
                                ) from exc


class AmqpBroker(Broker):
    def __init__(self, url: str, queue_type: str = "classic", delivery_limit: int = 5,
                 persistent: bool = False) -> None:
        self._url = url
        self._queue_type = queue_type
        self._delivery_limit = delivery_limit
        self._delivery_mode = 2 if persistent else 1
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        """The publisher's protocol channel, replaced after a reconnection."""
        self._admin: AbstractRobustChannel | None = None
        self._reply_name = f"inferno.reply.{socket.gethostname()}.{os.getpid()}.{id(self):x}"
        self._reply_declared = False
        self._reply_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[PredictReply]] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        with broker_errors():
            self._connection = await aio_pika.connect_robust(
                self._url, reconnect_interval=RECONNECT_INTERVAL_S)
            self._connection.close_callbacks.add(self._on_connection_lost)
            self._publisher = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True)
            await self._publisher.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
            self._publish_channel = await self._publisher.get_underlay_channel()
            self._publisher.reopen_callbacks.add(self._on_publisher_reopened)
            self._admin = await self._connection.channel()
            dlx = await self._admin.declare_exchange(
                DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
            dead = await self._admin.declare_queue(
                DEAD_LETTER_QUEUE, durable=True, arguments={"x-max-length": 10_000})
            await dead.bind(dlx)

    async def aclose(self) -> None:
        self._fail_pending(BrokerUnavailable("Broker connection closed"))
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    # -- facade side ------------------------------------------------------------------------

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
                    headers=request_headers(request.deadline, request.outputs,
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
                encode_frame(request.inputs, request.dtypes), exchange=EXCHANGE,
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
        self._fail_pending(BrokerUnavailable("Lost the connection to the message broker"))

    def _fail_pending(self, error: InfernoError) -> None:
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)

    # -- worker side ------------------------------------------------------------------------

    def _queue_arguments(self, max_length: int) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-max-length": max_length,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-queue-type": self._queue_type,
        }
        if self._queue_type == "quorum":
            arguments["x-delivery-limit"] = self._delivery_limit
        return arguments

    async def declare_queue(self, model: str, version: int, max_length: int) -> None:
        assert self._admin is not None, "broker not started"
        with broker_errors():
            queue = await self._admin.declare_queue(
                queue_name(model, version), durable=True,
                arguments=self._queue_arguments(max_length))
            await queue.bind(EXCHANGE, routing_key(model, version))

    async def bind_alias(self, model: str, version: int) -> None:
        assert self._admin is not None, "broker not started"
        await self._require_queue(model, version)
        with broker_errors():
            queue = await self._admin.get_queue(queue_name(model, version), ensure=False)
            await queue.bind(EXCHANGE, model)

    async def unbind_alias(self, model: str, version: int) -> None:
        assert self._admin is not None, "broker not started"
        with broker_errors():
            queue = await self._admin.get_queue(queue_name(model, version), ensure=False)
            await queue.unbind(EXCHANGE, model)

    async def delete_queue(self, model: str, version: int) -> None:
        assert self._admin is not None, "broker not started"
        with broker_errors():
            await self._admin.queue_delete(queue_name(model, version))

    async def queue_depth(self, model: str, version: int) -> int:
        depth = await self._peek_queue(model, version)
        return 0 if depth is None else depth

    async def _peek_queue(self, model: str, version: int) -> int | None:
        """Ready messages in the queue, or ``None`` when it does not exist."""
        assert self._connection is not None, "broker not started"
        with broker_errors():
            # A throwaway channel: a passive declare of a missing queue closes its channel,
            # which must not be one that others share.
            async with self._connection.channel() as channel:
                try:
                    queue = await channel.declare_queue(queue_name(model, version),
                                                        passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return None
                return int(queue.declaration_result.message_count or 0)

    async def _require_queue(self, model: str, version: int) -> None:
        if await self._peek_queue(model, version) is None:
            raise ModelNotLoaded(f"No queue {queue_name(model, version)}: declare it first")

    async def consume(self, model: str, version: int, handler: DeliveryHandler,
                      prefetch: int, signature: Signature) -> Subscription:
        assert self._connection is not None, "broker not started"

        async def queue_exists() -> bool:
            return await self._peek_queue(model, version) is not None

        with broker_errors():
            await self._require_queue(model, version)
            # No publisher confirms: replies and acks leave together, in order, and a reply is a
            # transient message to a queue that may be gone (its facade died): nothing to await.
            channel = await self._connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=prefetch)  # aio-pika restores it
            consumer = QueueConsumer(channel, queue_name(model, version), model, version,
                                     handler, signature, queue_exists)
            await consumer.start()
        return consumer
