"""The worker's side of an envelope (common/wire/envelope.py): one delivery per member, one
settlement per message.

Each member is handed to the batcher as a ``Delivery`` of its own, so members batch with
everything else and may finish in different batches. Their replies leave together: the members
answered in one event-loop turn go as one reply envelope at the end of that turn (a member that is
done never waits for a slower sibling). The message is acknowledged once every member is settled,
after the last replies; if any member was given back (requeue: the worker is stopping), the whole
message is requeued and every member is computed again on redelivery (at-least-once; the facade
drops the replies it no longer waits for).
"""

from __future__ import annotations

import asyncio

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from common.model.signature import Signature
from common.transport.amqp.cancel import Cancellations
from common.transport.amqp.outbox import Outbox
from common.transport.broker import Delivery
from common.wire.envelope import (
    ENVELOPE_CONTENT_TYPE,
    ENVELOPE_VERSION,
    HEADER_ENVELOPE,
    encode_reply_envelope,
)
from common.wire.messages import PredictReply, PredictRequest, encode_reply

__all__ = ["EnvelopeSettlement", "MemberDelivery"]


class EnvelopeSettlement:
    """What one delivered envelope owes: its members' replies, then one ack or requeue."""

    __slots__ = ("_message", "_outbox", "_replies", "_requeue", "_scheduled", "_settled",
                 "_signature", "_tag", "_unsettled")

    def __init__(self, message: DeliveredMessage, tag: int, outbox: Outbox, signature: Signature,
                 members: int) -> None:
        self._message = message
        self._tag = tag
        self._outbox = outbox
        self._signature = signature
        self._unsettled = members
        self._replies: list[tuple[str, bytes, str]] = []
        self._requeue = False
        self._scheduled = False
        self._settled = False

    @property
    def reply_to(self) -> str:
        """The envelope's reply queue, every member's."""
        return str(self._message.header.properties.reply_to or "")

    def reply(self, correlation_id: str, reply: PredictReply) -> None:
        if not self._message.header.properties.reply_to:
            return  # fire-and-forget producer
        body, status = encode_reply(reply, self._signature.output_dtypes)
        self._replies.append((correlation_id, body, status))
        self._schedule()

    def settle(self, requeue: bool = False) -> None:
        """One member is done (``requeue``: it goes back to the queue with its siblings)."""
        self._unsettled -= 1
        self._requeue = self._requeue or requeue
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        # The acknowledgement goes only after the replies: both through the outbox, in order.
        self._scheduled = False
        properties = self._message.header.properties
        if self._replies and properties.reply_to:
            replies, self._replies = self._replies, []
            self._outbox.publish(properties.reply_to, encode_reply_envelope(replies),
                                 Basic.Properties(
                                     content_type=ENVELOPE_CONTENT_TYPE,
                                     correlation_id=properties.correlation_id,
                                     headers={HEADER_ENVELOPE: ENVELOPE_VERSION}))
        if not self._unsettled and not self._settled:
            self._settled = True
            if self._requeue:
                self._outbox.reject(self._tag, requeue=True)
            else:
                self._outbox.ack(self._tag)


class MemberDelivery(Delivery):
    """One member of an envelope, answered and settled through the envelope's settlement."""

    __slots__ = ("_cancellations", "_correlation_id", "_settlement", "isolated", "request")

    def __init__(self, correlation_id: str, request: PredictRequest,
                 settlement: EnvelopeSettlement, cancellations: Cancellations,
                 isolated: bool = False) -> None:
        self.request = request
        self.isolated = isolated
        self._correlation_id = correlation_id
        self._settlement = settlement
        self._cancellations = cancellations

    @property
    def abandoned(self) -> bool:
        return self._cancellations.abandoned(self._settlement.reply_to, self._correlation_id)

    async def reply(self, reply: PredictReply) -> None:
        self._settlement.reply(self._correlation_id, reply)

    async def ack(self) -> None:
        self._settlement.settle()

    async def reject(self, requeue: bool) -> None:
        # A member dropped without requeue (poison, expired) is settled like an acked one.
        self._settlement.settle(requeue)
