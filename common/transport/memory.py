"""The embedded broker: per-model-version queues in process memory, same semantics as AMQP.

No serialisation: the facade's ``PredictRequest`` object is what the worker receives, and the
reply is a future the facade awaits. A publish that finds a consumer with free prefetch calls its
handler directly, so the hop costs a function call, not a task switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque

from common.errors import ModelNotLoaded, Overloaded
from common.model.config import ModelConfig
from common.transport.broker import (
    NO_QUEUE,
    Broker,
    Delivery,
    DeliveryHandler,
    QueueStats,
    Subscription,
    fail_at_deadline,
)
from common.wire.messages import PredictReply, PredictRequest, queue_name

__all__ = ["InMemoryBroker"]

log = logging.getLogger(__name__)


class _MemoryDelivery(Delivery):
    __slots__ = ("_consumer", "_future", "_queue", "_settled", "request")

    def __init__(self, queue: _Queue, request: PredictRequest,
                 future: asyncio.Future[PredictReply]) -> None:
        self.request = request
        self._queue = queue
        self._future = future
        self._consumer: _Consumer | None = None
        self._settled = False

    @property
    def abandoned(self) -> bool:
        return self._future.done()  # answered at its deadline, or its caller went away

    async def reply(self, reply: PredictReply) -> None:
        if self._future.done():
            log.debug("late reply to %s dropped: the caller stopped waiting",
                      self.request.request_id)
        else:
            self._future.set_result(reply)

    async def ack(self) -> None:
        self._settle()

    async def reject(self, requeue: bool) -> None:
        self._settle()
        if requeue:
            self._settled = False  # the redelivery is settled anew
            self._queue.ready.appendleft(self)
            self._queue.dispatch()

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery already settled")
        self._settled = True
        if self._consumer is not None:
            self._consumer.unacked -= 1
            self._consumer = None
            self._queue.dispatch()


class _Consumer(Subscription):
    def __init__(self, queue: _Queue, handler: DeliveryHandler, prefetch: int) -> None:
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.unacked = 0

    async def cancel(self) -> None:
        if self in self.queue.consumers:
            self.queue.consumers.remove(self)


class _Queue:
    def __init__(self, name: str, max_length: int) -> None:
        self.name = name
        self.max_length = max_length
        self.ready: deque[_MemoryDelivery] = deque()
        self.consumers: list[_Consumer] = []
        self._turn = itertools.count()

    def dispatch(self) -> None:
        """Hand ready deliveries to consumers with free prefetch, dropping expired ones."""
        now = time.time()
        while self.ready and self.consumers:
            consumer = self._free_consumer()
            if consumer is None:
                return
            delivery = self.ready.popleft()
            if delivery.request.deadline <= now or delivery._future.done():
                continue  # like AMQP per-message expiration: nobody waits for it any more
            consumer.unacked += 1
            delivery._consumer = consumer
            try:
                consumer.handler(delivery)
            except Exception:
                log.exception("consumer of %s failed on a delivery; requeued", self.name)
                consumer.unacked -= 1
                delivery._consumer = None
                self.ready.appendleft(delivery)
                return

    def _free_consumer(self) -> _Consumer | None:
        count = len(self.consumers)
        start = next(self._turn)
        for i in range(count):
            consumer = self.consumers[(start + i) % count]
            if consumer.unacked < consumer.prefetch:
                return consumer
        return None


class InMemoryBroker(Broker):
    """In process every caller pins a version, so nothing publishes to a model's alias: binding
    one only checks, like AMQP, that the version's queue exists."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        self._queues.clear()

    async def request(self, request: PredictRequest, coalesce_rows: int = 1) -> PredictReply:
        queue = self._queues.get(queue_name(request.model, request.version))
        if queue is None:
            raise ModelNotLoaded(
                f"Model '{request.model}' version {request.version} is not loaded", request.model
            )
        if len(queue.ready) >= queue.max_length:
            raise Overloaded(
                f"Model '{request.model}' version {request.version} is overloaded: "
                f"{queue.max_length} requests already queued"
            )
        future: asyncio.Future[PredictReply] = asyncio.get_running_loop().create_future()
        timer = fail_at_deadline(future, request)
        delivery = _MemoryDelivery(queue, request, future)
        queue.ready.append(delivery)
        queue.dispatch()
        try:
            return await future
        finally:
            timer.cancel()
            future.cancel()
            if delivery._consumer is None and not delivery._settled:
                # Still queued and nobody waits: free its place, as the broker's expiry would.
                with contextlib.suppress(ValueError):
                    queue.ready.remove(delivery)

    async def declare_queue(self, model: str, version: int, max_length: int) -> None:
        name = queue_name(model, version)
        if name not in self._queues:
            self._queues[name] = _Queue(name, max_length)

    async def delete_queue(self, model: str, version: int) -> None:
        queue = self._queues.pop(queue_name(model, version), None)
        if queue is not None:
            queue.consumers.clear()
            for delivery in queue.ready:  # their callers learn now, not at their deadlines
                if not delivery._future.done():
                    delivery._future.set_exception(ModelNotLoaded(
                        f"Model '{model}' version {version} was unloaded", model))
            queue.ready.clear()

    async def bind_alias(self, model: str, version: int) -> None:
        self._declared(model, version)

    async def unbind_alias(self, model: str, version: int) -> None:
        pass  # nothing routes by alias here; unbinding a missing queue is harmless, as on AMQP

    async def queue_stats(self, model: str, version: int) -> QueueStats:
        queue = self._queues.get(queue_name(model, version))
        if queue is None:
            return NO_QUEUE
        return QueueStats(messages=len(queue.ready), consumers=len(queue.consumers))

    async def consume(self, config: ModelConfig, handler: DeliveryHandler,
                      prefetch: int) -> Subscription:
        queue = self._declared(config.name, config.version)
        consumer = _Consumer(queue, handler, prefetch)
        queue.consumers.append(consumer)
        queue.dispatch()
        return consumer

    def _declared(self, model: str, version: int) -> _Queue:
        name = queue_name(model, version)
        queue = self._queues.get(name)
        if queue is None:
            raise ModelNotLoaded(f"No queue {name}: declare it first")
        return queue
