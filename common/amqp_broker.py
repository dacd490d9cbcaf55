"""The distributed broker: RabbitMQ through aio-pika, the message contract of
docs/queue-protocol.md.

Facade side: one publishing channel with publisher confirms (a full queue nacks: ``Overloaded``;
an unroutable ``mandatory`` publish comes back: ``ModelNotLoaded``) and one exclusive reply queue
per process, consumed once, futures keyed by correlation id. Worker side: a channel per consumed
queue with its own prefetch; replies go to the request's ``reply_to`` through the default
exchange, and the request is acknowledged only after its reply is published.

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
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from common.broker import Broker, Delivery, DeliveryHandler, Subscription
from common.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    InfernoError,
    InvalidInput,
    ModelNotLoaded,
    Overloaded,
)
from common.signature import Signature
from common.wire import (
    HEADER_STATUS,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    decode_inputs,
    decode_reply,
    encode_frame,
    encode_reply,
    parse_request_headers,
    queue_name,
    reply_content_type,
    request_headers,
    routing_key,
)

__all__ = ["AmqpBroker"]

log = logging.getLogger(__name__)

EXCHANGE = "inferno.predict"
DEAD_LETTER_EXCHANGE = "inferno.dlx"
DEAD_LETTER_QUEUE = "inferno.dead-letter"
NO_DEADLINE_S = 3600.0
CANCEL_TIMEOUT_S = 5.0
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


class _AmqpDelivery(Delivery):
    __slots__ = ("_channel", "_message", "_signature", "redelivered", "request")

    def __init__(self, message: AbstractIncomingMessage, request: PredictRequest,
                 channel: AbstractChannel, signature: Signature) -> None:
        self.request = request
        self.redelivered = bool(message.redelivered)
        self._message = message
        self._channel = channel
        self._signature = signature

    async def reply(self, reply: PredictReply) -> None:
        await _send_reply(self._channel, self._message, reply, self._signature)

    async def ack(self) -> None:
        with broker_errors():
            await self._message.ack()

    async def reject(self, requeue: bool) -> None:
        with broker_errors():
            await self._message.reject(requeue=requeue)


async def _send_reply(channel: AbstractChannel, message: AbstractIncomingMessage,
                      reply: PredictReply, signature: Signature) -> None:
    if not message.reply_to:
        return  # fire-and-forget producer
    body, status = encode_reply(reply, signature.output_dtypes)
    with broker_errors():
        await channel.default_exchange.publish(
            aio_pika.Message(body, content_type=reply_content_type(status),
                             correlation_id=message.correlation_id,
                             headers={HEADER_STATUS: status}),
            routing_key=message.reply_to)


class _AmqpSubscription(Subscription):
    def __init__(self, queue: AbstractQueue, tag: str, channel: AbstractChannel) -> None:
        self._queue = queue
        self._tag = tag
        self._channel = channel

    async def cancel(self) -> None:
        # Bounded: on a dead connection the cancel would wait for the reconnection.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._queue.cancel(self._tag), CANCEL_TIMEOUT_S)


class AmqpBroker(Broker):
    def __init__(self, url: str, queue_type: str = "classic", delivery_limit: int = 5,
                 persistent: bool = False) -> None:
        self._url = url
        self._queue_type = queue_type
        self._delivery_limit = delivery_limit
        self._delivery_mode = (aio_pika.DeliveryMode.PERSISTENT if persistent
                               else aio_pika.DeliveryMode.NOT_PERSISTENT)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._admin: AbstractChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._reply_lock = asyncio.Lock()
        self._reply_name = f"inferno.reply.{socket.gethostname()}.{os.getpid()}.{id(self):x}"
        self._pending: dict[str, asyncio.Future[PredictReply]] = {}
        self._ids = itertools.count(1)
        # Strong references: aio-pika holds consumers weakly (aio-pika #594).
        self._subscriptions: list[_AmqpSubscription] = []

    async def start(self) -> None:
        with broker_errors():
            self._connection = await aio_pika.connect_robust(
                self._url, reconnect_interval=RECONNECT_INTERVAL_S)
            self._connection.close_callbacks.add(self._on_connection_lost)
            self._publisher = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True)
            self._exchange = await self._publisher.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
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

    async def _replies(self) -> AbstractQueue:
        """The process's reply queue, declared and consumed once, on first use (workers that
        never call ``request`` have none)."""
        async with self._reply_lock:
            if self._reply_queue is None:
                assert self._publisher is not None, "broker not started"
                queue = await self._publisher.declare_queue(
                    self._reply_name, exclusive=True, auto_delete=True)
                await queue.consume(self._on_reply, no_ack=True)
                self._reply_queue = queue
        return self._reply_queue

    async def request(self, request: PredictRequest) -> PredictReply:
        if self._connection is None or self._connection.is_closed or self._exchange is None:
            raise BrokerUnavailable("Message broker unavailable: not connected")
        remaining = request.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("The request's deadline passed before it was queued")
        correlation_id = f"{next(self._ids):x}"
        future: asyncio.Future[PredictReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        future.add_done_callback(lambda _: self._pending.pop(correlation_id, None))
        try:
            with broker_errors():
                replies = await self._replies()
                message = aio_pika.Message(
                    encode_frame(request.inputs, request.dtypes),
                    content_type=TENSORS_CONTENT_TYPE, correlation_id=correlation_id,
                    reply_to=replies.name, message_id=request.request_id or correlation_id,
                    headers=request_headers(request.deadline, request.outputs,
                                            published=request.published or time.time()),
                    expiration=remaining, delivery_mode=self._delivery_mode)
                await self._publish(request, message, remaining)
            async with asyncio.timeout(request.remaining()):
                return await future
        except TimeoutError:
            raise DeadlineExceeded(
                f"Model '{request.model}' did not answer within the request's deadline"
            ) from None
        finally:
            future.cancel()

    async def _publish(self, request: PredictRequest, message: aio_pika.Message,
                       remaining: float) -> None:
        assert self._exchange is not None
        try:
            await self._exchange.publish(
                message, routing_key(request.model, request.version), mandatory=True,
                timeout=remaining)
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

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        correlation_id = message.correlation_id or ""
        future = self._pending.get(correlation_id)
        if future is None or future.done():
            # A late or duplicate reply (after a redelivery): nobody waits for it.
            log.debug("reply %s dropped: nobody waits for it", correlation_id)
            return
        status = (message.headers or {}).get(HEADER_STATUS)
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
        with broker_errors():
            await self._require_queue(model, version)
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            # Declared (passively), not just looked up: aio-pika restores the consumers of the
            # queues a robust channel declared, and only those, after a reconnection.
            queue = await channel.declare_queue(queue_name(model, version), passive=True)

            async def on_message(message: AbstractIncomingMessage) -> None:
                try:
                    request = _decode_request(model, version, message, signature)
                except InvalidInput as exc:
                    await _refuse(channel, message, exc, signature)
                    return
                handler(_AmqpDelivery(message, request, channel, signature))

            tag = await queue.consume(on_message)
        subscription = _AmqpSubscription(queue, tag, channel)
        self._subscriptions.append(subscription)
        return subscription


async def _refuse(channel: AbstractChannel, message: AbstractIncomingMessage,
                  error: InvalidInput, signature: Signature) -> None:
    """A poison message: answer it (if anyone asked) and dead-letter it, never requeue."""
    try:
        await _send_reply(channel, message, PredictReply(error=error), signature)
        await message.reject(requeue=False)
    except Exception:
        log.exception("could not refuse malformed message %s", message.message_id)


def _decode_request(model: str, version: int, message: AbstractIncomingMessage,
                    signature: Signature) -> PredictRequest:
    headers = parse_request_headers(message.headers)
    content_type = (message.content_type or "").split(";")[0].strip()
    inputs, outputs = decode_inputs(message.body, content_type, signature)
    # A producer that sets no deadline waits as long as the broker keeps the message.
    deadline = headers.deadline if headers.deadline is not None else time.time() + NO_DEADLINE_S
    published = headers.published or (message.timestamp.timestamp() if message.timestamp
                                       else 0.0)
    return PredictRequest(model=model, version=version, inputs=inputs, deadline=deadline,
                          outputs=outputs or headers.outputs,
                          request_id=message.message_id or "", published=published)
