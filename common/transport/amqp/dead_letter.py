"""Callers of poison requests are answered from the dead-letter exchange, not left to time out.

A quorum queue dead-letters a message once it was delivered ``x-delivery-limit`` + 1 times
without being settled: its workers died holding it each time. RabbitMQ then publishes it to
``inferno.dlx`` (fanout) with its properties as they were (``reply_to``, ``correlation_id``,
headers, less ``expiration``) and an ``x-death`` header whose latest entry has the reason
``delivery_limit`` (measured on RabbitMQ 3.10: the ``x-delivery-count`` header is gone, and
``x-first-death-reason`` says ``delivery_limit`` too). Besides the operators' queue
``inferno.dead-letter``, the DLX feeds a headers exchange ``inferno.poison`` that passes only
messages whose ``x-first-death-reason`` is ``delivery_limit`` to the queue ``inferno.poison``;
requests that expired (their caller already had its 504) or were refused as malformed (already
answered) never reach it.

Every worker consumes ``inferno.poison`` (``PoisonResponder``): each dead letter goes to one of
them, which answers the caller through the message's own ``reply_to`` and correlation id with a
``poison_request`` error (``common.errors.PoisonRequest``, HTTP 500), one reply per request (a
reply envelope with an error per member for an envelope), and acknowledges the dead letter only
after the reply is confirmed. At-least-once: a caller may get this reply after another one (a
worker that answered but died before its ack), and keeps the first. A request past its deadline
gets no reply (its caller stopped waiting), nor one without ``reply_to`` (fire-and-forget).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pamqp.commands import Basic
from pamqp.common import FieldTable

from common.errors import InvalidInput, PoisonRequest
from common.transport.amqp.delivered import Carried, read_message
from common.transport.blobs import HEADER_CLAIMS, Blobs
from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    ENVELOPE_VERSION,
    HEADER_ENVELOPE,
    encode_reply_envelope,
)
from common.wire.messages import (
    HEADER_STATUS,
    PredictReply,
    encode_reply,
    header_text,
    reply_content_type,
)

__all__ = [
    "POISON_EXCHANGE",
    "POISON_QUEUE",
    "REASON_DELIVERY_LIMIT",
    "PoisonReply",
    "PoisonResponder",
    "poison_binding",
    "poison_reply",
]

log = logging.getLogger(__name__)

POISON_EXCHANGE = "inferno.poison"
"""Headers exchange, bound to ``inferno.dlx``: what reaches it over the delivery limit goes on."""
POISON_QUEUE = "inferno.poison"
REASON_DELIVERY_LIMIT = "delivery_limit"
PREFETCH = 16


def poison_binding() -> FieldTable:
    """The arguments binding ``inferno.poison`` (queue) to ``inferno.poison`` (exchange)."""
    return {"x-match": "all", "x-first-death-reason": REASON_DELIVERY_LIMIT}


@dataclass(frozen=True, slots=True)
class PoisonReply:
    """The reply a dead-lettered request's caller gets: to ``routing_key`` (its ``reply_to``)."""

    routing_key: str
    correlation_id: str | None
    body: bytes
    content_type: str
    headers: dict[str, Any]


def poison_reply(body: bytes, properties: Basic.Properties, delivery_limit: int,
                 now: float | None = None) -> PoisonReply | None:
    """The answer to a dead letter, or ``None`` when it needs none: not dead-lettered for the
    delivery limit, no ``reply_to``, every request in it past its deadline, or an envelope
    that cannot be read (its callers time out)."""
    death = _latest_death(properties.headers or {})
    reply_to = properties.reply_to
    if not reply_to or death is None or header_text(death.get("reason")) != REASON_DELIVERY_LIMIT:
        return None
    now = time.time() if now is None else now
    try:
        delivered = read_message(body, properties)
    except InvalidInput:
        log.warning("dead-lettered envelope %s cannot be read: its callers are not answered",
                    properties.correlation_id)
        return None
    waiting = [r for r in delivered.requests if not _expired(r, now)]
    if not waiting:
        return None
    queue = header_text(death.get("queue")) or "its queue"
    error = PoisonRequest(
        f"The request was delivered {delivery_limit + 1} times from {queue} and the worker "
        f"holding it died each time (a poison request: it crashes the worker, e.g. a segfault, "
        f"os._exit or an out-of-memory kill); it was dead-lettered and will not be retried")
    reply, status = encode_reply(PredictReply(error=error))
    if not delivered.envelope:
        return PoisonReply(reply_to, properties.correlation_id, reply, reply_content_type(status),
                           {HEADER_STATUS: status})
    replies = [(r.correlation_id or "", reply, status) for r in waiting]
    return PoisonReply(reply_to, properties.correlation_id, encode_reply_envelope(replies),
                       ENVELOPE_CONTENT_TYPE, {HEADER_ENVELOPE: ENVELOPE_VERSION})


def _latest_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, (list, tuple)) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]  # RabbitMQ keeps the most recent first
    return None


def _expired(request: Carried, now: float) -> bool:
    try:
        deadline = request.deadline()
    except InvalidInput:
        return False  # answer it: a malformed deadline is no reason to leave a caller waiting
    return deadline is not None and deadline <= now


class PoisonResponder:
    """Consumes ``inferno.poison`` on a channel with publisher confirms; aio-pika consumes it
    again after a reconnection."""

    def __init__(self, channel: AbstractRobustChannel, delivery_limit: int,
                 blobs: Blobs | None = None) -> None:
        self._channel = channel
        self._delivery_limit = delivery_limit
        self._blobs = blobs
        """The claim check's store: a poison request's claims go with it."""

    async def start(self) -> None:
        await self._channel.set_qos(prefetch_count=PREFETCH)
        queue = await self._channel.get_queue(POISON_QUEUE)
        await queue.consume(self._on_dead_letter)

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        try:
            reply = poison_reply(message.body, message.properties, self._delivery_limit)
        except Exception:  # never requeue what would fail the same way on every worker
            log.exception("dead letter %s not answered", message.message_id)
            reply = None
        # Requeued if the reply cannot be published (the channel is closing): another worker,
        # or this one after reconnecting, answers it.
        async with message.process(requeue=True, ignore_processed=True):
            if reply is None:
                return
            await self._channel.default_exchange.publish(aio_pika.Message(
                reply.body, content_type=reply.content_type,
                correlation_id=reply.correlation_id, headers=reply.headers),
                routing_key=reply.routing_key)
            log.warning("answered poison request %s (message %s) with %s",
                        message.correlation_id, message.message_id, PoisonRequest.code)
        claims = (message.headers or {}).get(HEADER_CLAIMS)
        if claims is not None and self._blobs is not None:
            with contextlib.suppress(InvalidInput):  # a key outside the namespace: not ours
                self._blobs.delete(self._blobs.keys(claims))
