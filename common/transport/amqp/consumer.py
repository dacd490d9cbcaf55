"""The worker side of the AMQP broker: a queue's consumer, its deliveries, their settlement.

The hot path talks to aiormq (aio-pika's protocol layer) directly: aio-pika wraps every delivery
in an ``IncomingMessage`` run in a task of its own, and every reply in a ``Message`` converted to
frame properties again, which cost a worker about as much CPU as decoding the request. aio-pika
still owns the connection, the channel and its recovery: after a reconnection it restores the
channel (qos, the passively declared queue) and ``reopen_callbacks`` registers the consumer again
on the new protocol channel.

Replies, rejections and acknowledgements go through the channel's ``Outbox``
(outbox.py), coalesced per event-loop turn: one ``ack(multiple=True)`` for the
settled tags below the lowest one still in flight, single acks for the settled ones behind it,
always after the replies already queued on the same channel (one connection writes its frames in
order). Replies do not wait for the socket to drain.

An envelope (several requests in one message, common/wire/envelope.py) becomes one delivery per
member, answered and settled through its ``EnvelopeSettlement`` (settlement.py).
The channel's prefetch follows the rows per message received (prefetch.py).

A redelivered message (its worker died holding it) is not computed from the version's queue: it
moves to the version's retry queue, one message per request (retry.py),
whose consumer holds one message at a time and hands each over ``isolated`` (a batch of its
own), so that a poison request dies alone.

A message claiming tensors (``inferno-claims``, common/transport/blobs.py) is read once its
claims are fetched: the delivery deletes them when it is acked or refused for good, never when
it goes back to the queue or moves to the retry queue. Its outputs of the claim-check size go
back by reference too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from common.errors import InfernoError, InvalidInput, StateUnavailable
from common.model.config import ModelConfig
from common.model.signature import Signature
from common.transport.amqp.cancel import Cancellations
from common.transport.amqp.delivered import Carried, Delivered, read_message, redeliveries
from common.transport.amqp.outbox import Outbox
from common.transport.amqp.prefetch import RowPrefetch
from common.transport.amqp.retry import Retrier
from common.transport.amqp.settlement import EnvelopeSettlement, MemberDelivery
from common.transport.blobs import HEADER_CLAIMS, Blobs
from common.transport.broker import Delivery, DeliveryHandler, Subscription
from common.wire.messages import (
    HEADER_STATUS,
    PredictReply,
    PredictRequest,
    decode_inputs,
    encode_reply,
    reply_content_type,
)

__all__ = ["ConsumerGroup", "QueueConsumer"]

log = logging.getLogger(__name__)

NO_DEADLINE_S = 3600.0
CANCEL_TIMEOUT_S = 5.0


class _AmqpDelivery(Delivery):
    __slots__ = ("_blobs", "_cancellations", "_claims", "_message", "_outbox", "_signature",
                 "_tag", "isolated", "request")

    def __init__(self, message: DeliveredMessage, tag: int, request: PredictRequest,
                 outbox: Outbox, signature: Signature, isolated: bool,
                 cancellations: Cancellations, blobs: Blobs | None, claims: list[str]) -> None:
        self.request = request
        self.isolated = isolated
        self._tag = tag
        self._message = message
        self._outbox = outbox
        self._signature = signature
        self._cancellations = cancellations
        self._blobs = blobs
        self._claims = claims

    @property
    def abandoned(self) -> bool:
        properties = self._message.header.properties
        return self._cancellations.abandoned(properties.reply_to, properties.correlation_id)

    async def reply(self, reply: PredictReply) -> None:
        blobs = self._blobs
        if blobs is None or reply.error is not None or not self._message.header.properties.reply_to:
            _send_reply(self._outbox, self._message, reply, self._signature)
            return
        claims = blobs.claims(sum(a.nbytes for a in reply.outputs.values()))
        if claims is None:
            _send_reply(self._outbox, self._message, reply, self._signature)
            return
        body, status = encode_reply(reply, self._signature.output_dtypes, claims)
        if claims.blobs:
            try:
                await blobs.put(claims, self.request.remaining())
            except StateUnavailable as exc:
                _send_reply(self._outbox, self._message, PredictReply(error=exc), self._signature)
                return
        _publish_reply(self._outbox, self._message, body, status,
                       claims.header if claims.blobs else None)

    async def ack(self) -> None:
        self._outbox.ack(self._tag)
        self._drop_claims()

    async def reject(self, requeue: bool) -> None:
        self._outbox.reject(self._tag, requeue)
        if not requeue:
            self._drop_claims()

    def _drop_claims(self) -> None:
        if self._claims and self._blobs is not None:
            self._blobs.delete(self._claims)


def _send_reply(outbox: Outbox, message: DeliveredMessage, reply: PredictReply,
               signature: Signature) -> None:
    if message.header.properties.reply_to:  # else a fire-and-forget producer
        _publish_reply(outbox, message, *encode_reply(reply, signature.output_dtypes), None)


def _publish_reply(outbox: Outbox, message: DeliveredMessage, body: bytes, status: str,
                   claims: str | None) -> None:
    properties = message.header.properties
    headers: dict[str, Any] = {HEADER_STATUS: status}
    if claims is not None:
        headers[HEADER_CLAIMS] = claims
    outbox.publish(cast(str, properties.reply_to), body, Basic.Properties(
        content_type=reply_content_type(status), correlation_id=properties.correlation_id,
        headers=headers))


class QueueConsumer(Subscription):
    """One model version's queue consumed on a channel of its own, across reconnections.

    ``cancellations``: the cancel notices, which tell a delivery whose caller left;
    ``max_elements``: the element limit per tensor of admission (``PredictRequest.admit``);
    ``retry``: the retrier and the retry queue that redelivered messages move to (the version's
    queue); ``isolated``: every delivery runs in a batch of its own (the retry queue)."""

    def __init__(self, channel: AbstractRobustChannel, queue: str, config: ModelConfig,
                 handler: DeliveryHandler, queue_exists: Callable[[], Awaitable[bool]],
                 prefetch: RowPrefetch, cancellations: Cancellations, max_elements: int,
                 retry: tuple[Retrier, str] | None = None, isolated: bool = False,
                 blobs: Blobs | None = None) -> None:
        self._max_elements = max_elements
        self._blobs = blobs
        self._fetching: set[asyncio.Task[None]] = set()  # strong references
        self._channel = channel
        self._cancellations = cancellations
        self._retry = retry
        self._isolated = isolated
        self._prefetch = prefetch
        self._queue_exists = queue_exists
        self._queue = queue
        self._config = config
        self._handler = handler
        self._signature = config.signature
        self._outbox: Outbox | None = None
        self._tag: str | None = None
        self._cancelled = False

    async def start(self) -> None:
        await self._consume()
        # After a reconnection aio-pika reopens the channel; the consumer is ours to restore.
        self._channel.reopen_callbacks.add(self._on_reopen)

    async def _consume(self) -> None:
        underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        outbox = Outbox(underlay)

        async def on_message(message: DeliveredMessage) -> None:
            self._on_message(message, outbox)

        self._outbox = outbox
        ok = await underlay.basic_consume(self._queue, on_message)
        self._tag = ok.consumer_tag

    async def _on_reopen(self, *_: Any) -> None:
        if self._cancelled:
            return
        try:
            # Consuming a queue deleted meanwhile would close the channel, which aio-pika would
            # reopen, and so on: look first.
            if await self._queue_exists():
                await self._consume()
            else:
                log.warning("queue %s is gone: not consuming it again", self._queue)
        except Exception:
            log.exception("could not consume %s again after reconnecting", self._queue)

    def _on_message(self, message: DeliveredMessage, outbox: Outbox) -> None:
        deliver = cast(Basic.Deliver, message.delivery)  # a consumer is only handed Deliver
        tag = cast(int, deliver.delivery_tag)
        outbox.delivered(tag)
        redelivered = redeliveries(message.header.properties, bool(deliver.redelivered))
        if self._retry is not None and redelivered:
            retrier, retry_queue = self._retry
            retrier.move(retry_queue, message.body, message.header.properties, redelivered,
                         moved=lambda: outbox.ack(tag),
                         in_place=lambda: self._take(message, tag, outbox, True))
            return
        self._take(message, tag, outbox, self._isolated)

    def _take(self, message: DeliveredMessage, tag: int, outbox: Outbox, isolated: bool) -> None:
        """Read the message and hand its request(s) over, or refuse it; one that claims
        tensors once they are fetched."""
        claims = (message.header.properties.headers or {}).get(HEADER_CLAIMS)
        if claims is None:
            self._read(message, tag, outbox, isolated)
            return
        task = asyncio.create_task(self._fetch(message, tag, outbox, isolated, claims))
        self._fetching.add(task)
        task.add_done_callback(self._fetching.discard)

    async def _fetch(self, message: DeliveredMessage, tag: int, outbox: Outbox, isolated: bool,
                     header: object) -> None:
        keys: list[str] = []
        try:
            if self._blobs is None:
                raise InvalidInput(f"The message claims tensors ({HEADER_CLAIMS}), but this "
                                   f"worker has no blob store (INFERNO_REDIS_URL)")
            keys = self._blobs.keys(header)
            blobs = await self._blobs.fetch(keys)
        except (InvalidInput, StateUnavailable) as exc:
            self._refuse(message, tag, outbox, exc, keys)
            return
        self._read(message, tag, outbox, isolated, blobs, keys)

    def _read(self, message: DeliveredMessage, tag: int, outbox: Outbox, isolated: bool,
              blobs: dict[str, bytes | None] | None = None, claims: list[str] | None = None
              ) -> None:
        properties = message.header.properties
        try:
            delivered = read_message(message.body, properties)
            if delivered.envelope:
                self._prefetch.received(self._on_envelope(delivered, message, tag, outbox,
                                                          isolated))
                return
            request = self._admit(delivered.requests[0], properties, blobs)
        except InvalidInput as exc:
            self._refuse(message, tag, outbox, exc, claims or [])
            return
        self._prefetch.received(request.checked.rows)
        self._handler(_AmqpDelivery(message, tag, request, outbox, self._signature, isolated,
                                    self._cancellations, self._blobs, claims or []))

    def _refuse(self, message: DeliveredMessage, tag: int, outbox: Outbox, error: InfernoError,
                claims: list[str]) -> None:
        """A message that cannot be computed: answered (if anyone asked) and dead-lettered with
        its claims deleted, never requeued. Only producers send malformed ones (the facade
        validates first): INFO, not a warning."""
        log.info("refused message %s on %s: %s", message.header.properties.message_id,
                 self._queue, error)
        _send_reply(outbox, message, PredictReply(error=error), self._signature)
        outbox.reject(tag, requeue=False)
        if claims and self._blobs is not None:
            self._blobs.delete(claims)

    def _on_envelope(self, delivered: Delivered, message: DeliveredMessage, tag: int,
                     outbox: Outbox, isolated: bool) -> int:
        """Hand each member over; a member that does not pass is answered with its error.
        Returns the rows handed over."""
        settlement = EnvelopeSettlement(message, tag, outbox, self._signature,
                                        len(delivered.requests))
        deliveries = []
        for member in delivered.requests:
            correlation_id = member.correlation_id or ""
            try:
                request = self._admit(member, delivered.properties)
            except InvalidInput as exc:
                settlement.reply(correlation_id, PredictReply(error=exc))
                settlement.settle()
                continue
            deliveries.append(MemberDelivery(correlation_id, request, settlement,
                                             self._cancellations, isolated))
        for delivery in deliveries:
            self._handler(delivery)
        return sum(d.request.checked.rows for d in deliveries)

    def _admit(self, carried: Carried, properties: Basic.Properties,
               blobs: dict[str, bytes | None] | None = None) -> PredictRequest:
        """A producer's request (or an envelope's member) admitted as the facade admits an HTTP
        request; ``InvalidInput`` when it does not pass."""
        headers = carried.parsed_headers()
        inputs, outputs = decode_inputs(carried.body, carried.content_type, self._signature,
                                        blobs)
        # A producer that sets no deadline waits as long as the broker keeps the message.
        deadline = headers.deadline if headers.deadline is not None else time.time() + NO_DEADLINE_S
        published = headers.published or (properties.timestamp.timestamp()
                                          if properties.timestamp else 0.0)
        return PredictRequest.admit(self._config, inputs, outputs or headers.outputs,
                                    max_elements=self._max_elements, deadline=deadline,
                                    request_id=carried.message_id or "", published=published)

    async def cancel(self) -> None:
        if self._cancelled:  # close() after cancel(): the consumer is already gone
            return
        self._cancelled = True
        self._prefetch.cancel()
        self._channel.reopen_callbacks.discard(self._on_reopen)
        if self._outbox is None or self._tag is None:
            return
        # Bounded: on a dead connection the cancel would wait for the reconnection.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._outbox.channel.basic_cancel(self._tag),
                                   CANCEL_TIMEOUT_S)

    async def close(self) -> None:
        await self.cancel()
        if self._outbox is not None:
            self._outbox.flush()  # the last replies and acks go before the channel closes
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._channel.close(), CANCEL_TIMEOUT_S)


class ConsumerGroup(Subscription):
    """The consumers of one version's queues (the queue and its retry queue), as one."""

    def __init__(self, *consumers: QueueConsumer) -> None:
        self._consumers = consumers

    async def cancel(self) -> None:
        await asyncio.gather(*(c.cancel() for c in self._consumers))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._consumers))

