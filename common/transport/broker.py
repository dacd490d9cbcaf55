"""The data-plane contract between facade and workers.

The facade only calls ``request()``; workers declare their model versions' queues and consume
them. ``InMemoryBroker`` (embedded mode) and the AMQP broker (distributed mode) implement the same
semantics, checked by one contract test suite:

- one bounded queue per model version; a full queue refuses new requests at once (``Overloaded``);
- no queue for a version: ``ModelNotLoaded``;
- a request carries its deadline: the caller stops waiting then (``DeadlineExceeded``) and the
  broker drops it if it is still queued;
- deliveries are acknowledged after their reply; a rejected delivery is requeued or dropped;
  a consumer holds at most ``prefetch`` unacknowledged deliveries;
- ``queue_stats`` tells what waits in a version's queue and how many consume it, as the broker
  counts them (what the facade exports as ``inferno_queue_*``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import DeadlineExceeded
from common.model.config import ModelConfig
from common.wire.messages import PredictReply, PredictRequest

__all__ = ["NO_QUEUE", "Broker", "Delivery", "DeliveryHandler", "QueueStats", "Subscription",
           "fail_at_deadline"]


def fail_at_deadline(future: asyncio.Future[PredictReply], request: PredictRequest
                     ) -> asyncio.TimerHandle:
    """A bare timer that fails ``future`` with ``DeadlineExceeded`` at the request's deadline
    (cancel it once answered): ``asyncio.timeout()`` costs several times more per request."""
    return asyncio.get_running_loop().call_later(request.remaining(), _expire, future, request)


def _expire(future: asyncio.Future[PredictReply], request: PredictRequest) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded(
            f"Model '{request.model}' did not answer within the request's deadline"))


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A model version's queue as the broker counts it at one moment."""

    messages: int
    """Requests waiting, not yet handed to a consumer. AMQP: the ready messages of the version's
    queue and of its retry queue; an envelope of several requests counts once, and what a
    worker holds unacknowledged (its prefetch) is not counted."""
    consumers: int
    """Consumers of the version's queue: one per worker runner of the version."""


NO_QUEUE = QueueStats(messages=0, consumers=0)
"""What ``queue_stats`` says of a version without a queue."""


class Delivery(ABC):
    """One request handed to a worker, to be answered and then settled exactly once."""

    request: PredictRequest
    isolated: bool = False
    """Run it in a batch of its own: it was delivered before and the worker holding it died (a
    suspected poison request must not take a batch of innocent requests down with it)."""

    @property
    def abandoned(self) -> bool:
        """Nobody waits for the answer any more (its caller went away): the worker drops it
        instead of computing it. A transport says so when it can tell: in process, or over
        AMQP from a cancel notice."""
        return False

    @abstractmethod
    async def reply(self, reply: PredictReply) -> None:
        """Send the answer to whoever waits for it (nothing if nobody does)."""

    @abstractmethod
    async def ack(self) -> None:
        """Done: the broker forgets the request."""

    @abstractmethod
    async def reject(self, requeue: bool) -> None:
        """Give the request back to the queue, or drop it (poison, expired)."""


DeliveryHandler = Callable[[Delivery], None]
"""Called for each delivery, on the event loop; it must not block (hand the work to a task)."""


class Subscription(ABC):
    """A running consumer of one queue."""

    @abstractmethod
    async def cancel(self) -> None:
        """Stop new deliveries; deliveries already handed out stay valid to reply and settle."""

    async def close(self) -> None:
        """Cancel, and release what the subscription holds (a broker channel): call it once
        every delivery it handed out is settled. A delivery still unsettled goes back to the
        queue (AMQP: its channel closes)."""
        await self.cancel()


class Broker(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def request(self, request: PredictRequest, coalesce_rows: int = 1) -> PredictReply:
        """Publish to the request's model version and wait for the reply until its deadline.

        ``coalesce_rows`` (the version's ``max_batch_size``) bounds the rows of requests that
        may travel together in one message, where the broker coalesces them (AMQP)."""

    @abstractmethod
    async def declare_queue(self, model: str, version: int, max_length: int) -> None:
        """Create the version's queue if it does not exist (idempotent)."""

    @abstractmethod
    async def delete_queue(self, model: str, version: int) -> None:
        """Remove the version's queue; requests still in it are dropped."""

    @abstractmethod
    async def bind_alias(self, model: str, version: int) -> None:
        """Route the model's alias (routing key ``<model>``) to this version's queue too."""

    @abstractmethod
    async def unbind_alias(self, model: str, version: int) -> None:
        """Stop routing the model's alias to this version's queue."""

    @abstractmethod
    async def queue_stats(self, model: str, version: int) -> QueueStats:
        """The version's queue now: requests waiting and consumers (``NO_QUEUE``, zeros, when
        it does not exist). It asks the broker each time: keep it off the predict path."""

    async def queue_depth(self, model: str, version: int) -> int:
        """Requests waiting in the queue, not yet handed to a consumer."""
        return (await self.queue_stats(model, version)).messages

    async def dead_letter_depth(self) -> int | None:
        """Messages in the broker's dead-letter queue (AMQP: ``inferno.dead-letter``: expired,
        rejected and poison requests); ``None`` where there is none (in process)."""
        return None

    @abstractmethod
    async def consume(self, config: ModelConfig, handler: DeliveryHandler,
                      prefetch: int) -> Subscription:
        """Start handing the queue of ``config``'s version to ``handler``. What producers sent
        over the wire is decoded and validated against ``config`` (``Signature
        .validate_request``) first; the in-process broker hands over requests the facade
        validated."""
