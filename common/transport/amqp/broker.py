"""The distributed broker: RabbitMQ through aio-pika, the message contract of
docs/queue-protocol.md.

``AmqpBroker`` owns the connection and composes two sides:

- the facade's requests (``common.transport.amqp.client``): a publishing channel with confirms,
  which declares the ``inferno.predict`` exchange it publishes to, one exclusive reply queue per
  process, futures keyed by correlation id;
- the worker's consumers (``common.transport.amqp.consumer``): a channel per consumed queue with
  its own prefetch; replies go to the request's ``reply_to`` through the default exchange, and
  the request is acknowledged only after its reply is published.

Here is the topology between them, on an admin channel: the dead-letter exchange and queue, the
poison exchange and queue behind it (dead_letter.py), a durable bounded
queue per model version with its pinned binding and, for the active version, the alias binding,
and beside it the version's retry queue (retry.py). A broker that consumes
(a worker's) also moves redelivered messages to the retry queues and answers the callers of
poison requests (``PoisonResponder``), on a channel with publisher confirms. aio-pika keeps the
connection, the channels, the topology and their recovery; requests and replies go through
aiormq, and the aiormq internals the worker relies on are checked before connecting
(``check_internals``).

Every aio-pika/aiormq failure is turned into ``BrokerUnavailable`` at this boundary
(``broker_errors``).
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from common.errors import BrokerUnavailable, ModelNotLoaded
from common.model.config import ModelConfig
from common.transport.amqp.aiormq_frames import check_internals
from common.transport.amqp.cancel import Cancellations
from common.transport.amqp.client import AmqpClient
from common.transport.amqp.consumer import ConsumerGroup, QueueConsumer
from common.transport.amqp.dead_letter import (
    POISON_EXCHANGE,
    POISON_QUEUE,
    PoisonResponder,
    poison_binding,
)
from common.transport.amqp.errors import broker_errors
from common.transport.amqp.prefetch import RowPrefetch
from common.transport.amqp.retry import Retrier, retry_queue_name
from common.transport.blobs import Blobs
from common.transport.broker import (
    NO_QUEUE,
    Broker,
    DeliveryHandler,
    QueueStats,
    Subscription,
)
from common.wire.envelope import MAX_ENVELOPE_BYTES
from common.wire.messages import (
    DEFAULT_MAX_ELEMENTS,
    PredictReply,
    PredictRequest,
    queue_name,
    routing_key,
)

__all__ = ["AmqpBroker"]

EXCHANGE = "inferno.predict"
DEAD_LETTER_EXCHANGE = "inferno.dlx"
DEAD_LETTER_QUEUE = "inferno.dead-letter"
RECONNECT_INTERVAL_S = 1.0  # aio-pika's default of 5 s is a long outage for a serving path


class AmqpBroker(Broker):
    def __init__(self, url: str, queue_type: str = "classic", delivery_limit: int = 5,
                 persistent: bool = False,
                 max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
                 max_elements: int = DEFAULT_MAX_ELEMENTS,
                 ssl_context: ssl.SSLContext | None = None, blobs: Blobs | None = None) -> None:
        """``blobs``: the claim check's store (common/transport/blobs.py); ``None``: every
        tensor travels in its message."""
        self._url = url
        self._blobs = blobs
        self._max_elements = max_elements
        """The element limit per tensor that consumers admit producers' requests by."""
        self._ssl_context = ssl_context
        """``amqps://``: the CA and client certificate to use (``common.tls``); ``None``: the
        system's trust store."""
        self._queue_type = queue_type
        self._delivery_limit = delivery_limit
        self._client = AmqpClient(EXCHANGE, persistent=persistent,
                                  max_envelope_bytes=max_envelope_bytes, blobs=blobs)
        self._connection: AbstractRobustConnection | None = None
        self._admin: AbstractRobustChannel | None = None
        self._retrier: Retrier | None = None
        self._cancellations = Cancellations()
        self._responder: PoisonResponder | None = None
        """Started with the first consumer: workers answer the callers of poison requests."""
        self._retries_lock = asyncio.Lock()  # versions load in parallel: one responder

    async def start(self) -> None:
        # Before connecting: a clear error now rather than an AttributeError mid-request.
        check_internals()
        with broker_errors():
            self._connection = await aio_pika.connect_robust(
                self._url, reconnect_interval=RECONNECT_INTERVAL_S,
                ssl_context=self._ssl_context)
            await self._client.start(self._connection)
            self._admin = await self._connection.channel()
            dlx = await self._admin.declare_exchange(
                DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
            dead = await self._admin.declare_queue(
                DEAD_LETTER_QUEUE, durable=True, arguments={"x-max-length": 10_000})
            await dead.bind(dlx)
            # What the delivery limit dead-letters also goes to the poison responders' queue.
            poison_exchange = await self._admin.declare_exchange(
                POISON_EXCHANGE, aio_pika.ExchangeType.HEADERS, durable=True)
            await poison_exchange.bind(dlx)
            poison = await self._admin.declare_queue(
                POISON_QUEUE, durable=True, arguments={"x-max-length": 10_000})
            await poison.bind(poison_exchange, arguments=poison_binding())

    async def aclose(self) -> None:
        self._client.fail_pending(BrokerUnavailable("Broker connection closed"))
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        if self._blobs is not None:
            await self._blobs.aclose()

    def _opened(self) -> AbstractRobustConnection:
        """The connection ``start`` opened: before it, the broker is out of reach as after a
        failed connect (the client's ``request`` says the same)."""
        if self._connection is None:
            raise BrokerUnavailable("Message broker unavailable: not started")
        return self._connection

    def _admin_channel(self) -> AbstractRobustChannel:
        if self._admin is None:
            raise BrokerUnavailable("Message broker unavailable: not started")
        return self._admin

    async def request(self, request: PredictRequest, coalesce_rows: int = 1) -> PredictReply:
        return await self._client.request(request, coalesce_rows)

    # -- topology and consumers -------------------------------------------------------------

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
        admin = self._admin_channel()
        with broker_errors():
            queue = await admin.declare_queue(
                queue_name(model, version), durable=True,
                arguments=self._queue_arguments(max_length))
            await queue.bind(EXCHANGE, routing_key(model, version))
            # Reached by workers only (default exchange): redelivered requests, one per message.
            await admin.declare_queue(
                retry_queue_name(model, version), durable=True,
                arguments=self._queue_arguments(max_length))

    async def bind_alias(self, model: str, version: int) -> None:
        admin = self._admin_channel()
        await self._require_queue(model, version)
        with broker_errors():
            queue = await admin.get_queue(queue_name(model, version), ensure=False)
            await queue.bind(EXCHANGE, model)

    async def unbind_alias(self, model: str, version: int) -> None:
        admin = self._admin_channel()
        with broker_errors():
            queue = await admin.get_queue(queue_name(model, version), ensure=False)
            await queue.unbind(EXCHANGE, model)

    async def delete_queue(self, model: str, version: int) -> None:
        admin = self._admin_channel()
        with broker_errors():
            await admin.queue_delete(queue_name(model, version))
            await admin.queue_delete(retry_queue_name(model, version))

    async def queue_stats(self, model: str, version: int) -> QueueStats:
        """Ready messages of the version's queue and of its retry queue; consumers of the
        version's queue (each worker runner also consumes the retry queue: not counted twice)."""
        main = await self._peek_queue(model, version) or NO_QUEUE
        retry = await self._peek(retry_queue_name(model, version)) or NO_QUEUE
        return QueueStats(messages=main.messages + retry.messages, consumers=main.consumers)

    async def dead_letter_depth(self) -> int:
        dead = await self._peek(DEAD_LETTER_QUEUE)
        return 0 if dead is None else dead.messages

    async def _peek_queue(self, model: str, version: int) -> QueueStats | None:
        """The version's queue, or ``None`` when it does not exist."""
        return await self._peek(queue_name(model, version))

    async def _peek(self, name: str) -> QueueStats | None:
        """A passive declare: the queue's ready messages and consumers, ``None`` if missing."""
        connection = self._opened()
        with broker_errors():
            # A throwaway admin channel: a passive declare of a missing queue closes its
            # channel, which must not be one that others share.
            async with connection.channel() as channel:
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return None
                declared = queue.declaration_result
                return QueueStats(messages=int(declared.message_count or 0),
                                  consumers=int(declared.consumer_count or 0))

    async def _require_queue(self, model: str, version: int) -> None:
        if await self._peek_queue(model, version) is None:
            raise ModelNotLoaded(f"No queue {queue_name(model, version)}: declare it first")

    async def consume(self, config: ModelConfig, handler: DeliveryHandler,
                      prefetch: int) -> Subscription:
        connection = self._opened()
        model, version = config.name, config.version

        async def queue_exists() -> bool:
            return await self._peek_queue(model, version) is not None

        retry_name = retry_queue_name(model, version)

        async def retry_queue_exists() -> bool:
            return await self._peek(retry_name) is not None

        with broker_errors():
            await self._require_queue(model, version)
            retrier = await self._start_retries()
            # No publisher confirms: replies and acks leave together, in order, and a reply is a
            # transient message to a queue that may be gone (its facade died): nothing to await.
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=prefetch)  # aio-pika restores it
            # ``prefetch`` counts requests' rows; the channel's count follows the rows per
            # message, at least a message per runner slot and a forming batch each.
            rows = RowPrefetch(channel, prefetch, floor=2 * config.concurrency.max_concurrency)
            consumer = QueueConsumer(channel, queue_name(model, version), config, handler,
                                     queue_exists, rows, self._cancellations, self._max_elements,
                                     retry=(retrier, retry_name), blobs=self._blobs)
            # The retry queue: one message in hand at a time, each in a batch of its own, so
            # that a poison request that kills this worker takes no other retried request along.
            retry_channel = await connection.channel(publisher_confirms=False)
            await retry_channel.set_qos(prefetch_count=1)
            retry = QueueConsumer(retry_channel, retry_name, config, handler, retry_queue_exists,
                                  RowPrefetch(retry_channel, 1, floor=1), self._cancellations,
                                  self._max_elements, isolated=True, blobs=self._blobs)
            await consumer.start()
            await retry.start()
        return ConsumerGroup(consumer, retry)

    async def _start_retries(self) -> Retrier:
        """The first consumer's: the channel that moves redelivered messages to the retry
        queues and answers the callers of poison requests (publisher confirms on both), and the
        listener of cancel notices."""
        connection = self._opened()
        async with self._retries_lock:
            if self._retrier is None:
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
                responder = PoisonResponder(channel, self._delivery_limit, self._blobs)
                await responder.start()
                await self._cancellations.listen(connection)
                self._retrier, self._responder = Retrier(channel), responder
            return self._retrier
