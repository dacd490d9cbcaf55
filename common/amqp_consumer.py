"""The worker side of the AMQP broker: a queue's consumer, its deliveries, their settlement.

The hot path talks to aiormq (aio-pika's protocol layer) directly: aio-pika wraps every delivery
in an ``IncomingMessage`` run in a task of its own, and every reply in a ``Message`` converted to
frame properties again, which cost a worker about as much CPU as decoding the request. aio-pika
still owns the connection, the channel and its recovery: after a reconnection it restores the
channel (qos, the passively declared queue) and ``reopen_callbacks`` registers the consumer again
on the new protocol channel.

Acknowledgements are coalesced per channel (``AckWindow``): a settled delivery is acknowledged
with the next ``ack(multiple=True)``, sent once per event-loop turn for every settled tag below
the lowest one still in flight, and always after the replies already queued on the same channel
(one connection writes its frames in order). Replies do not wait for the socket to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from common.broker import Delivery, DeliveryHandler, Subscription
from common.errors import BrokerUnavailable, InfernoError, InvalidInput
from common.signature import Signature
from common.wire import (
    HEADER_STATUS,
    PredictReply,
    PredictRequest,
    decode_inputs,
    encode_reply,
    parse_request_headers,
    reply_content_type,
)

__all__ = ["AckWindow", "QueueConsumer", "broker_errors"]

log = logging.getLogger(__name__)

NO_DEADLINE_S = 3600.0
CANCEL_TIMEOUT_S = 5.0


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


class AckWindow:
    """The unsettled deliveries of one protocol channel, acknowledged together.

    Tags are handed out in increasing order. ``ack(multiple=True)`` of tag *t* acknowledges every
    outstanding tag up to *t*, so it may only be sent for a prefix that is wholly settled: a batch
    that finishes before an older one waits for it (it is still acknowledged, only later). A
    rejected tag is settled at once with its own frame, sent before any ack that spans it.
    """

    __slots__ = ("_acks", "_channel", "_flush_pending", "_outstanding")

    def __init__(self, channel: aiormq.Channel) -> None:
        self._channel = channel
        self._outstanding: OrderedDict[int, bool | None] = OrderedDict()
        """Tag → ``None`` in flight, ``True`` settled by ack, ``False`` settled by reject."""
        self._flush_pending = False
        self._acks: set[asyncio.Future[None]] = set()  # strong references to running sends

    @property
    def channel(self) -> aiormq.Channel:
        return self._channel

    def delivered(self, tag: int) -> None:
        self._outstanding[tag] = None

    def ack(self, tag: int) -> None:
        self._settled(tag, True)

    async def reject(self, tag: int, requeue: bool) -> None:
        self._settled(tag, False)
        with broker_errors():
            await self._channel.basic_reject(tag, requeue=requeue, wait=False)

    def _settled(self, tag: int, acked: bool) -> None:
        self._outstanding[tag] = acked
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        last_ack = 0
        outstanding = self._outstanding
        while outstanding:
            tag, acked = next(iter(outstanding.items()))
            if acked is None:
                break
            outstanding.popitem(last=False)
            if acked:
                last_ack = tag
        if last_ack:
            task = asyncio.ensure_future(self._send_ack(last_ack))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _send_ack(self, tag: int) -> None:
        try:
            await self._channel.basic_ack(tag, multiple=True, wait=False)
        except Exception as exc:
            # The channel is gone: the broker redelivers what it had not seen acknowledged.
            log.debug("ack up to %d not sent: %s: %s", tag, type(exc).__name__, exc)


class _AmqpDelivery(Delivery):
    __slots__ = ("_message", "_signature", "_tag", "_window", "redelivered", "request")

    def __init__(self, message: DeliveredMessage, tag: int, redelivered: bool,
                 request: PredictRequest, window: AckWindow, signature: Signature) -> None:
        self.request = request
        self.redelivered = redelivered
        self._tag = tag
        self._message = message
        self._window = window
        self._signature = signature

    async def reply(self, reply: PredictReply) -> None:
        await send_reply(self._window.channel, self._message, reply, self._signature)

    async def ack(self) -> None:
        self._window.ack(self._tag)

    async def reject(self, requeue: bool) -> None:
        await self._window.reject(self._tag, requeue)


async def send_reply(channel: aiormq.Channel, message: DeliveredMessage,
                     reply: PredictReply, signature: Signature) -> None:
    properties = message.header.properties
    if not properties.reply_to:
        return  # fire-and-forget producer
    body, status = encode_reply(reply, signature.output_dtypes)
    with broker_errors():
        await channel.basic_publish(
            body, routing_key=properties.reply_to, wait=False,
            properties=Basic.Properties(content_type=reply_content_type(status),
                                        correlation_id=properties.correlation_id,
                                        headers={HEADER_STATUS: status}))


class QueueConsumer(Subscription):
    """One model version's queue consumed on a channel of its own, across reconnections."""

    def __init__(self, channel: AbstractRobustChannel, queue: str, model: str, version: int,
                 handler: DeliveryHandler, signature: Signature,
                 queue_exists: Callable[[], Awaitable[bool]]) -> None:
        self._channel = channel
        self._queue_exists = queue_exists
        self._queue = queue
        self._model = model
        self._version = version
        self._handler = handler
        self._signature = signature
        self._window: AckWindow | None = None
        self._tag: str | None = None
        self._cancelled = False

    async def start(self) -> None:
        await self._consume()
        # After a reconnection aio-pika reopens the channel; the consumer is ours to restore.
        self._channel.reopen_callbacks.add(self._on_reopen)

    async def _consume(self) -> None:
        underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        window = AckWindow(underlay)

        async def on_message(message: DeliveredMessage) -> None:
            await self._on_message(message, window)

        self._window = window
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

    async def _on_message(self, message: DeliveredMessage, window: AckWindow) -> None:
        deliver = cast(Basic.Deliver, message.delivery)  # a consumer is only handed Deliver
        tag = cast(int, deliver.delivery_tag)
        window.delivered(tag)
        try:
            request = _decode_request(self._model, self._version, message, self._signature)
        except InvalidInput as exc:
            await _refuse(window, message, tag, exc, self._signature)
            return
        self._handler(_AmqpDelivery(message, tag, bool(deliver.redelivered), request, window,
                                    self._signature))

    async def cancel(self) -> None:
        self._cancelled = True
        self._channel.reopen_callbacks.discard(self._on_reopen)
        if self._window is None or self._tag is None:
            return
        # Bounded: on a dead connection the cancel would wait for the reconnection.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._window.channel.basic_cancel(self._tag),
                                   CANCEL_TIMEOUT_S)


async def _refuse(window: AckWindow, message: DeliveredMessage, tag: int, error: InvalidInput,
                  signature: Signature) -> None:
    """A poison message: answer it (if anyone asked) and dead-letter it, never requeue."""
    try:
        await send_reply(window.channel, message, PredictReply(error=error), signature)
        await window.reject(tag, requeue=False)
    except Exception:
        log.exception("could not refuse malformed message %s",
                      message.header.properties.message_id)


def _decode_request(model: str, version: int, message: DeliveredMessage,
                    signature: Signature) -> PredictRequest:
    properties = message.header.properties
    headers = parse_request_headers(properties.headers)
    content_type = (properties.content_type or "").split(";")[0].strip()
    inputs, outputs = decode_inputs(message.body, content_type, signature)
    # A producer that sets no deadline waits as long as the broker keeps the message.
    deadline = headers.deadline if headers.deadline is not None else time.time() + NO_DEADLINE_S
    published = headers.published or (properties.timestamp.timestamp() if properties.timestamp
                                      else 0.0)
    return PredictRequest(model=model, version=version, inputs=inputs, deadline=deadline,
                          outputs=outputs or headers.outputs,
                          request_id=properties.message_id or "", published=published)
