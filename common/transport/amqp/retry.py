"""Redelivered requests leave the version's queue for its retry queue, one message per request.

A message the broker delivers again was held by a worker that went away without settling it:
a worker killed mid-batch (segfault, ``os._exit``, OOM kill), a lost connection, a worker that
stopped before that request's batch ran. One of its requests may be a poison request, one that
kills every worker that computes it. On the version's queue it would take the innocent
requests along every time: those batched with it, those of its envelope (the broker redelivers
and counts messages, not members) and those prefetched by the same worker, whose delivery count
rises with every crash until the delivery limit dead-letters them too.

So a worker that receives a redelivered message (the AMQP ``redelivered`` flag, or quorum
queues' ``x-delivery-count`` ≥ 1) does not compute it. It publishes each request it carries (the
message itself, or each member of an envelope) as a single message to the version's **retry
queue** ``inferno.<model>.v<version>.retry``, with publisher confirms, and acknowledges the
original only once every copy is confirmed. Workers consume the retry queue with a prefetch of
one and run each of its requests in a batch of its own: when a poison request kills a worker
from there, no other request of the retry queue was in that worker's hands, so only the
poison request's delivery count rises, and the retry queue's delivery limit (quorum queues)
dead-letters it alone. Innocent requests are answered on their first delivery from the retry
queue. Messages from the retry queue are never moved again.

A copy keeps what a caller needs: ``reply_to``, the correlation id and message id (an envelope
member's own), the ``inferno-*`` headers, the delivery mode; its ``expiration`` is what remains
of its ``inferno-deadline``, and the header ``inferno-redelivered`` says how many deliveries of
the original ended without a settlement. A request already past its deadline is dropped, as the
batcher would drop it. When a copy cannot be published (the retry queue is full or missing, the
broker does not confirm in time), the original is computed where it is, in batches of one.
Worker dies between the confirms and the ack: the original comes back and is copied again; a
request may be answered twice (at-least-once: the caller keeps the first reply).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractRobustChannel
from pamqp.commands import Basic

from common.transport.amqp.delivered import read_message
from common.wire.messages import expiration, queue_name

__all__ = [
    "HEADER_REDELIVERED",
    "RETRY_SUFFIX",
    "Retrier",
    "RetryCopy",
    "retry_copies",
    "retry_queue_name",
]

log = logging.getLogger(__name__)

RETRY_SUFFIX = ".retry"
HEADER_REDELIVERED = "inferno-redelivered"
"""On a retry copy: how many deliveries of the original ended without being settled."""
PUBLISH_TIMEOUT_S = 5.0
"""How long a copy may wait for its confirm before the original is computed in place."""
_DROPPED = ("x-delivery-count", "x-death", "x-first-death-exchange", "x-first-death-queue",
            "x-first-death-reason", "message_id")
"""Headers the broker wrote on the original, for the copy starts its own history, and an
envelope member's message id, which its copy carries as a property."""


def retry_queue_name(model: str, version: int) -> str:
    """``inferno.<model>.v<version>.retry``: never a model version's queue name, which ends in
    ``.v<digits>``."""
    return queue_name(model, version) + RETRY_SUFFIX


@dataclass(frozen=True, slots=True)
class RetryCopy:
    """One request of a redelivered message, as the single message the retry queue gets."""

    body: bytes
    properties: Basic.Properties


def retry_copies(body: bytes | memoryview, properties: Basic.Properties, redelivered: int,
                 now: float | None = None) -> list[RetryCopy]:
    """The single messages a redelivered message becomes: itself, or each envelope member;
    requests past their deadline are left out. ``InvalidInput`` when it cannot be read (an
    envelope's framing, a malformed ``inferno-deadline``): then it is not moved, and the
    consumer refuses it as it refuses any malformed message."""
    now = time.time() if now is None else now
    copies = []
    for request in read_message(body, properties).requests:
        deadline = request.deadline()
        if deadline is not None and deadline <= now:
            continue  # nobody waits for it any more
        headers = {k: v for k, v in request.headers.items() if k not in _DROPPED}
        headers[HEADER_REDELIVERED] = redelivered
        copies.append(RetryCopy(bytes(request.body), Basic.Properties(
            content_type=request.content_type, content_encoding=properties.content_encoding,
            headers=headers, delivery_mode=properties.delivery_mode,
            priority=properties.priority, correlation_id=request.correlation_id,
            reply_to=properties.reply_to, message_id=request.message_id,
            expiration=(properties.expiration if deadline is None
                        else expiration(deadline, now)),
            timestamp=properties.timestamp, message_type=properties.message_type,
            app_id=properties.app_id)))
    return copies


class Retrier:
    """Moves redelivered messages to their version's retry queue, on a channel with publisher
    confirms (``mandatory``: a retry queue that is gone is an error, not a silent drop)."""

    def __init__(self, channel: AbstractRobustChannel) -> None:
        self._channel = channel
        self._moving: set[asyncio.Task[None]] = set()  # strong references

    def move(self, queue: str, body: bytes | memoryview, properties: Basic.Properties,
             redelivered: int, moved: Callable[[], None],
             in_place: Callable[[], None]) -> None:
        """Copy the message's requests to ``queue`` in a task of its own, then call ``moved``
        (acknowledge the original); when that fails, ``in_place`` (compute it here)."""
        task = asyncio.create_task(self._move(queue, body, properties, redelivered, moved,
                                              in_place))
        self._moving.add(task)
        task.add_done_callback(self._moving.discard)

    async def _move(self, queue: str, body: bytes | memoryview, properties: Basic.Properties,
                    redelivered: int, moved: Callable[[], None],
                    in_place: Callable[[], None]) -> None:
        try:
            copies = retry_copies(body, properties, redelivered)
        except Exception:  # malformed: the consumer refuses it as it refuses any such message
            in_place()
            return
        try:
            channel = await self._channel.get_underlay_channel()
            await asyncio.gather(*(self._publish(channel, queue, c) for c in copies))
        except Exception as exc:
            log.warning("could not move a redelivered message (%d request(s)) to %s: %s: %s;"
                        " computing it in place, alone", len(copies), queue,
                        type(exc).__name__, exc)
            in_place()
            return
        moved()

    @staticmethod
    async def _publish(channel: Any, queue: str, copy: RetryCopy) -> None:
        confirmation = await channel.basic_publish(
            copy.body, exchange="", routing_key=queue, properties=copy.properties,
            mandatory=True, timeout=PUBLISH_TIMEOUT_S)
        if not isinstance(confirmation, Basic.Ack):  # a nack raises; no confirm at all is a bug
            raise RuntimeError(f"publish to {queue} not confirmed: {confirmation!r}")
