"""Requests whose caller left: the facade says so, and every worker drops them unbatched.

A message in a RabbitMQ queue cannot be taken back. When a predict's caller goes away after its
request was published (``facade.disconnects``), the facade publishes a **cancel notice** to the
fanout exchange ``inferno.cancel``: an empty body with the request's ``reply_to`` and
``correlation_id``, expiring with the request's deadline. Every worker consumes that exchange
through an exclusive queue of its own and keeps each notice until the request's deadline. A
delivery whose (``reply_to``, ``correlation_id``) has a notice is ``abandoned``, and the batcher
drops it instead of computing it. A notice that comes after the request's batch started changes
nothing: the reply goes to nobody, as before.

Notices are best effort, neither confirmed by the worker nor persistent: a lost notice costs the
request's compute and nothing else.
"""

from __future__ import annotations

import logging
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pamqp.commands import Basic

from common.errors import InvalidInput
from common.wire.messages import HEADER_DEADLINE, epoch_ms, expiration, parse_epoch_ms

__all__ = ["CANCEL_EXCHANGE", "MAX_NOTICES", "Cancellations", "cancel_notice"]

log = logging.getLogger(__name__)

CANCEL_EXCHANGE = "inferno.cancel"
MAX_NOTICES = 100_000
"""Notices a worker keeps at most (a few MB); past it the expired ones go, then the oldest."""


def cancel_notice(reply_to: str, correlation_id: str, deadline: float) -> Basic.Properties:
    """The properties of the notice that the request (``reply_to``, ``correlation_id``), due at
    ``deadline`` (epoch seconds), lost its caller."""
    return Basic.Properties(reply_to=reply_to, correlation_id=correlation_id,
                            expiration=expiration(deadline, time.time()),
                            headers={HEADER_DEADLINE: epoch_ms(deadline)})


class Cancellations:
    """The notices a worker has received, by (``reply_to``, ``correlation_id``)."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._until

    def abandoned(self, reply_to: str | None, correlation_id: str | None) -> bool:
        """Whether the request (``reply_to``, ``correlation_id``) has lost its caller."""
        return (reply_to or "", correlation_id or "") in self._until

    def __len__(self) -> int:
        return len(self._until)

    def add(self, reply_to: str, correlation_id: str, deadline: float) -> None:
        if len(self._until) >= MAX_NOTICES:
            self._prune()
        self._until[reply_to, correlation_id] = deadline

    def _prune(self) -> None:
        now = time.time()
        self._until = {key: until for key, until in self._until.items() if until > now}
        while len(self._until) >= MAX_NOTICES:  # still full: the oldest go (insertion order)
            del self._until[next(iter(self._until))]

    async def listen(self, connection: AbstractRobustConnection) -> None:
        """Consume the notices on a channel of their own (aio-pika restores the queue, its
        binding and the consumer after a reconnection)."""
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            CANCEL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_notice, no_ack=True)

    async def _on_notice(self, message: AbstractIncomingMessage) -> None:
        try:
            deadline = parse_epoch_ms(message.headers or {}, HEADER_DEADLINE)
        except InvalidInput:
            deadline = None
        if not (message.reply_to and message.correlation_id and deadline is not None):
            log.debug("malformed cancel notice ignored")
            return
        self.add(message.reply_to, message.correlation_id, deadline)
