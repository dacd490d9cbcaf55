"""The facade's side of the AMQP broker: publish a request, await its reply.

One publishing channel with publisher confirms (a full queue nacks: ``Overloaded``; an
unroutable ``mandatory`` publish comes back: ``ModelNotLoaded``) and one exclusive reply queue per
process, declared and consumed once on first use, futures keyed by correlation id. Requests and
replies go through aiormq (aio-pika's protocol layer); aio-pika keeps the connection, the channel
and its recovery. After a reconnection the reply queue is consumed again; the requests that were
waiting when the connection went fail at once (their replies went with the exclusive queue).

Requests to one model version are coalesced (coalescing.py): those decoded in
one event-loop turn go together at the end of the turn, as one envelope (common/wire/envelope.py),
or as a plain message when a turn has only one. The worker answers
an envelope with reply envelopes, resolved member by member; a single reply to the envelope's own
correlation id (a worker that could not read it) fails every member.

A request with a tensor of at least ``INFERNO_CLAIM_CHECK_BYTES`` travels alone, that tensor by
reference (common/transport/blobs.py): stored before the publish, deleted when the publish
fails; a reply's claimed outputs are read and deleted at once, or deleted when nobody waits.

Every publish and every wait is bounded by the request's deadline (a publish during an outage can
hang until the connection is back: aio-pika #636). ``AmqpBroker`` (broker.py)
owns the connection and composes this client with the topology and consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from common.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    InfernoError,
    InvalidInput,
    ModelNotLoaded,
    Overloaded,
    StateUnavailable,
    WorkerFailed,
)
from common.model.strings import framed_nbytes
from common.transport.amqp.cancel import CANCEL_EXCHANGE, cancel_notice
from common.transport.amqp.coalescing import Lane, Pending
from common.transport.amqp.errors import broker_errors
from common.transport.blobs import HEADER_CLAIMS, Blobs, Claims
from common.transport.broker import fail_at_deadline
from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    ENVELOPE_VERSION,
    HEADER_ENVELOPE,
    decode_reply_envelope,
    encode_request_envelope,
)
from common.wire.framing import encode_frame
from common.wire.messages import (
    HEADER_STATUS,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    PredictRequest,
    decode_reply,
    expiration,
    request_headers,
    routing_key,
)

__all__ = ["AmqpClient"]

log = logging.getLogger(__name__)


class AmqpClient:
    """Requests to ``exchange`` and their replies, on a connection the broker opened."""

    def __init__(self, exchange: str, persistent: bool = False,
                 max_envelope_bytes: int = 0, blobs: Blobs | None = None) -> None:
        self._exchange = exchange
        self._blobs = blobs
        self._delivery_mode = 2 if persistent else 1
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        """The publisher's protocol channel, replaced after a reconnection."""
        self._reply_name = f"inferno.reply.{socket.gethostname()}.{os.getpid()}.{id(self):x}"
        self._reply_declared = False
        self._reply_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[PredictReply]] = {}
        self._envelopes: dict[str, _Envelope] = {}
        """Envelopes with members still waiting, by the envelope's correlation id."""
        self._ids = itertools.count(1)
        self._max_envelope_bytes = max_envelope_bytes
        self._lanes: dict[str, Lane] = {}
        """The groups gathering in this event-loop turn, by routing key."""
        self._publishing: set[asyncio.Task[None]] = set()  # strong references

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Open the publishing channel on ``connection`` and declare the exchange it publishes
        to. Raises aio-pika's errors: the caller converts them (``broker_errors``)."""
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_lost)
        self._publisher = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
        await self._publisher.declare_exchange(
            self._exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        # Publishing to an exchange that does not exist would close the channel: declare it.
        await self._publisher.declare_exchange(
            CANCEL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        self._publish_channel = await self._publisher.get_underlay_channel()
        self._publisher.reopen_callbacks.add(self._on_publisher_reopened)

    def fail_pending(self, error: InfernoError) -> None:
        """Fail every request still waiting for its reply (the connection is closing), and stop
        the publishes of those not sent yet."""
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        for task in list(self._publishing):
            task.cancel()

    async def _declare_replies(self) -> None:
        """The process's reply queue, declared and consumed once, on first use (workers that
        never call ``request`` have none). aio-pika declares it again after a reconnection
        (the exclusive queue died with the old connection); ``_on_publisher_reopened`` consumes
        it again."""
        async with self._reply_lock:
            if not self._reply_declared:
                if self._publisher is None:
                    raise BrokerUnavailable("Message broker unavailable: not started")
                await self._publisher.declare_queue(
                    self._reply_name, exclusive=True, auto_delete=True)
                await self._consume_replies(self._publisher)
                self._reply_declared = True

    async def _consume_replies(self, publisher: AbstractRobustChannel) -> None:
        channel = await publisher.get_underlay_channel()
        await channel.basic_consume(self._reply_name, self._on_reply, no_ack=True)

    async def _on_publisher_reopened(self, publisher: AbstractRobustChannel | None) -> None:
        """Called by aio-pika with the channel that reopened, the publisher (``None`` only once
        it is garbage: this client holds it)."""
        if publisher is None:
            return
        self._publish_channel = await publisher.get_underlay_channel()
        if self._reply_declared:
            try:
                await self._consume_replies(publisher)
            except Exception:
                log.exception("could not consume the reply queue again after reconnecting")

    async def request(self, request: PredictRequest, coalesce_rows: int = 1) -> PredictReply:
        """Publish to the request's model version and wait for the reply until its deadline;
        ``coalesce_rows``: the most rows one envelope to that version may carry."""
        if not self._connected():
            raise BrokerUnavailable("Message broker unavailable: not connected")
        if request.remaining() <= 0:
            raise DeadlineExceeded("The request's deadline passed before it was queued")
        correlation_id = f"{next(self._ids):x}"
        future: asyncio.Future[PredictReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        future.add_done_callback(lambda _: self._pending.pop(correlation_id, None))
        timer = fail_at_deadline(future, request)
        pending: Pending | None = None
        try:
            if not self._reply_declared:
                with broker_errors():
                    # Bounded like every wait of a request: on a silent link the declaration
                    # would wait for the AMQP heartbeat timeout (a minute), past the deadline.
                    try:
                        async with asyncio.timeout(request.remaining()):
                            await self._declare_replies()
                    except TimeoutError:
                        raise BrokerUnavailable(
                            "Message broker did not declare the reply queue before the "
                            "request's deadline") from None
            pending = Pending(request, correlation_id, future,
                              sum(map(framed_nbytes, request.inputs.values())))
            key = routing_key(request.model, request.version)
            claimed = self._blobs is not None and self._blobs.claiming(pending.nbytes)
            if self._max_envelope_bytes and not claimed:
                lane = self._lanes.get(key)
                if lane is None:  # the turn's first request to this version
                    lane = self._lanes[key] = Lane()
                    asyncio.get_running_loop().call_soon(self._flush, key)
                lane.gather(pending, coalesce_rows, self._max_envelope_bytes)
            else:
                await self._publish(key, [pending])
            return await future
        except asyncio.CancelledError:  # the caller left: tell the workers, if it is queued
            if pending is not None and pending.published:
                self._background(self._cancel(correlation_id, request.deadline))
            raise
        finally:
            timer.cancel()
            future.cancel()

    def _connected(self) -> bool:
        channel = self._publish_channel
        return not (channel is None or channel.is_closed or self._connection is None
                    or self._connection.is_closed)

    def _flush(self, key: str) -> None:
        """The end of the event-loop turn: publish what gathered in it, one message per group."""
        for group in self._lanes.pop(key).groups:
            self._background(self._publish_group(key, group))

    def _background(self, publish: Coroutine[Any, Any, None]) -> None:
        """A publish in a task of its own, held until done (and cancelled by ``fail_pending``)."""
        task = asyncio.create_task(publish)
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _cancel(self, correlation_id: str, deadline: float) -> None:
        """Tell every worker that the request ``correlation_id`` lost its caller
        (``common.transport.amqp.cancel``); best effort."""
        channel = self._publish_channel
        if channel is None or not self._connected() or deadline <= time.time():
            return
        try:
            await channel.basic_publish(
                b"", exchange=CANCEL_EXCHANGE, routing_key="",
                properties=cancel_notice(self._reply_name, correlation_id, deadline),
                timeout=max(0.001, deadline - time.time()))
        except Exception as exc:  # the request is computed, and its reply discarded
            log.debug("cancel notice of %s not sent: %s", correlation_id, exc)

    async def _publish_group(self, key: str, group: list[Pending]) -> None:
        """Publish one group in a task of its own: its requests learn its error, whatever it is
        (their own tasks only wait for their replies)."""
        try:
            await self._publish(key, group)
        except InfernoError as exc:
            _fail(group, exc)
        except Exception as exc:
            log.exception("publishing %d request(s) to %s failed", len(group), key)
            _fail(group, InfernoError(f"Could not publish the request: {type(exc).__name__}"))

    async def _publish(self, key: str, group: list[Pending]) -> None:
        """One message to ``key``: the request alone, or an envelope of several. Requests whose
        wait ended while they gathered (deadline, disconnect) are left out."""
        live = [p for p in group if not p.future.done()]
        if not live:
            return
        for p in live:  # from here on, a caller that leaves must say so (_cancel)
            p.published = True
        self._channel()
        now = time.time()
        request = live[0].request
        claims = None
        if len(live) == 1:
            claims = self._blobs.claims(live[0].nbytes) if self._blobs is not None else None
            body, properties = self._single(live[0], now, claims)
            if claims is not None and claims.blobs:
                await cast(Blobs, self._blobs).put(claims, request.remaining())
            else:
                claims = None
        else:
            body, properties = self._envelope(live, now)
        try:
            await self._publish_body(key, live, body, properties, now)
        except BaseException:
            if claims is not None:  # nobody will fetch them
                cast(Blobs, self._blobs).delete(claims.blobs)
            raise

    async def _publish_body(self, key: str, live: list[Pending], body: bytes,
                            properties: Basic.Properties, now: float) -> None:
        request = live[0].request
        channel = self._channel()  # again: storing the claims took a while
        with broker_errors():
            try:
                await channel.basic_publish(
                    body, exchange=self._exchange, routing_key=key, properties=properties,
                    mandatory=True, timeout=max(p.request.remaining(now) for p in live))
            except aiormq.exceptions.PublishError:
                raise ModelNotLoaded(
                    f"Model '{request.model}' version {request.version} is not loaded "
                    f"(no queue for it)", request.model) from None
            except aiormq.exceptions.DeliveryError:
                raise Overloaded(
                    f"Model '{request.model}' version {request.version} is overloaded: "
                    f"its queue is full") from None
            except TimeoutError:
                raise BrokerUnavailable(
                    "Message broker did not confirm the request before its deadline") from None

    def _channel(self) -> aiormq.abc.AbstractChannel:
        channel = self._publish_channel
        if channel is None or not self._connected():
            raise BrokerUnavailable("Message broker unavailable: not connected")
        return channel

    def _single(self, pending: Pending, now: float, claims: Claims | None
                ) -> tuple[bytes, Basic.Properties]:
        body, headers, message_id = _encoded(pending, now, claims)
        if claims is not None and claims.blobs:
            headers[HEADER_CLAIMS] = claims.header
        return body, Basic.Properties(
            content_type=TENSORS_CONTENT_TYPE, correlation_id=pending.correlation_id,
            reply_to=self._reply_name, message_id=message_id, headers=headers,
            expiration=expiration(pending.request.deadline, now),
            delivery_mode=self._delivery_mode)

    def _envelope(self, group: list[Pending], now: float) -> tuple[bytes, Basic.Properties]:
        envelope_id = f"{next(self._ids):x}"
        members = []
        for pending in group:
            body, headers, message_id = _encoded(pending, now)
            members.append((pending.correlation_id, body, {**headers, "message_id": message_id}))
        _Envelope(envelope_id, group, self._envelopes)
        deadline = max(p.request.deadline for p in group)
        return encode_request_envelope(members), Basic.Properties(
            content_type=ENVELOPE_CONTENT_TYPE, correlation_id=envelope_id,
            reply_to=self._reply_name, message_id=envelope_id,
            headers={HEADER_ENVELOPE: ENVELOPE_VERSION,
                     **request_headers(deadline, published=now)},
            expiration=expiration(deadline, now), delivery_mode=self._delivery_mode)

    async def _on_reply(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        correlation_id = properties.correlation_id or ""
        if properties.content_type == ENVELOPE_CONTENT_TYPE:
            self._on_reply_envelope(correlation_id, message.body)
            return
        future = self._pending.get(correlation_id)
        envelope = self._envelopes.get(correlation_id) if future is None else None
        headers = properties.headers or {}
        if (future is None or future.done()) and envelope is None:
            # A late or duplicate reply (after a redelivery): nobody waits for it.
            log.debug("reply %s dropped: nobody waits for it", correlation_id)
            with contextlib.suppress(InvalidInput):  # no list of blob keys: none of ours
                await self._claimed(headers.get(HEADER_CLAIMS), wanted=False)
            return
        status = headers.get(HEADER_STATUS)
        try:
            blobs = await self._claimed(headers.get(HEADER_CLAIMS), future is not None)
        except StateUnavailable as exc:
            reply = PredictReply(error=exc)
        except InvalidInput as exc:
            reply = PredictReply(error=WorkerFailed(f"Malformed reply from the worker: {exc}"))
        else:
            reply = decode_reply(message.body,
                                 status if isinstance(status, (str, bytes)) else None, blobs)
        if future is not None:
            future.set_result(reply)
        elif envelope is not None:  # the worker refused the whole envelope
            error = reply.error or WorkerFailed("The worker answered an envelope with one reply")
            envelope.fail(WorkerFailed(f"The worker could not read the request's envelope: "
                                       f"{error}") if isinstance(error, InvalidInput) else error)

    async def _claimed(self, header: object, wanted: bool) -> dict[str, bytes | None] | None:
        """The outputs a reply claims (``header``: its ``inferno-claims``, ``None`` for none),
        taken from the store, or deleted there when the reply is not ``wanted``. Raises
        ``InvalidInput`` for a header that is no list of blob keys, ``StateUnavailable``."""
        if header is None or self._blobs is None:
            return None
        keys = self._blobs.keys(header)
        if wanted:
            return await self._blobs.take(keys)
        self._blobs.delete(keys)
        return None

    def _on_reply_envelope(self, correlation_id: str, body: bytes) -> None:
        try:
            replies = decode_reply_envelope(body)
        except InvalidInput as exc:
            envelope = self._envelopes.get(correlation_id)
            if envelope is not None:
                envelope.fail(WorkerFailed(f"Malformed reply from the worker: {exc}"))
            return
        for member in replies:
            future = self._pending.get(member.correlation_id)
            if future is not None and not future.done():
                future.set_result(decode_reply(member.body, member.status))

    def _on_connection_lost(self, *_: Any) -> None:
        # Replies to the lost exclusive queue are gone with it: fail the waiters now rather
        # than at their deadlines.
        self.fail_pending(BrokerUnavailable("Lost the connection to the message broker"))


class _Envelope:
    """The requests one envelope carried, registered under its correlation id until every one
    of them is done: a worker that refuses the whole envelope answers to that id."""

    __slots__ = ("_envelopes", "_id", "_members", "_waiting")

    def __init__(self, envelope_id: str, members: list[Pending],
                 envelopes: dict[str, _Envelope]) -> None:
        self._id = envelope_id
        self._members = members
        self._envelopes = envelopes
        self._waiting = len(members)
        envelopes[envelope_id] = self
        for pending in members:
            pending.future.add_done_callback(self._member_done)

    def fail(self, error: InfernoError) -> None:
        _fail(self._members, error)

    def _member_done(self, _: asyncio.Future[PredictReply]) -> None:
        self._waiting -= 1
        if not self._waiting:
            del self._envelopes[self._id]


def _encoded(pending: Pending, now: float, claims: Claims | None = None
             ) -> tuple[bytes, dict[str, Any], str]:
    """A request's tensor body, ``inferno-*`` headers and message id: the same whether it
    travels alone or in an envelope (never with claims)."""
    request = pending.request
    return (encode_frame(request.inputs, request.dtypes, claim=claims),
            request_headers(request.deadline, request.checked.outputs,
                            published=request.published or now),
            request.request_id or pending.correlation_id)


def _fail(group: list[Pending], error: InfernoError) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(error)

