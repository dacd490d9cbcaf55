"""Dynamic batching of one model version's requests.

Deliveries are submitted from the broker's consumer callback (non-blocking). One loop task forms
batches and starts them, at most ``max_concurrency`` at once, each on the runtime's executor thread
(a TorchScript model whose batches take under ``INLINE_IN_S`` on average runs on the event loop
instead, until they take over ``INLINE_OUT_S``: the hand-off costs more than such a model; and so
does a *lone* batch, the only work its batcher has, of one whose batches take under
``INLINE_LONE_S``; Python models always run on their thread, since their code may block). While
every thread is busy and a full batch is pending (it cannot grow), it is *staged*: handed to the
threads at once, where it starts the moment one frees instead of when the event loop gets round
to it after answering the last batch (a few ms under load: ~10 % of a 30 ms batch). A batch that
could still grow is not: formed early, it would run small. A staged batch's wait for its thread
counts in Triton's ``compute_input``.

- ``greedy`` (default): when a runner slot is free, the batch runs at once with whatever has
  arrived; while every slot is busy, requests accumulate into the next batch. Large batches form
  under load by themselves, and a lone request waits for nothing.
- ``fill``: after the first request, wait for ``max_batch_size`` rows or until the fixed deadline
  ``first arrival + max_batch_latency_ms`` (an event fires when the batch is full; no polling).

Requests are concatenated along the batch dimension only when every non-batch dimension matches
(a different ``seq`` waits for its own batch); an ``isolated`` delivery (a request retried after
its worker died, a suspected poison request) shares its batch with none. Expired requests are
dropped before a batch runs (never computed). A model exception fails only that batch's
requests, with ``ModelFailed``; the reply and ack of a batch are shielded from cancellation, and
the ack follows the reply. Each batch and each failed or dropped request is counted in Triton's
statistics (``worker/statistics.py``) before its replies go out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from common.errors import InfernoError, ModelFailed, WorkerFailed
from common.metrics import WorkerMetrics
from common.model.config import BatchWait, ModelConfig, ModelFormat
from common.transport.broker import Delivery
from common.wire.messages import PredictReply
from worker.runtime import Parts, Runtime
from worker.statistics import VersionCounters

__all__ = ["Batcher"]

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]

INLINE_IN_S = 0.00015
"""A TorchScript model whose batches take less than this (moving mean) runs on the event loop:
handing a batch to a thread and back costs more (about 0.2 ms on the development machine at c=1,
up to 1 ms under load, for a model that takes 11 µs)."""
INLINE_OUT_S = 0.0003
"""Above this it goes back to its thread (the gap keeps a model near the bound from flapping)."""
INLINE_LONE_S = 0.001
"""A lone batch (one request, none pending, no other batch running) of a TorchScript model whose
batches take less than this runs on the event loop: nothing else is waiting for the loop, and
the hand-off is a third of a c=1 request to mlp (0.3 ms per batch) on the development machine.
Under load the batch goes to its thread, where it overlaps the loop's work on the next one."""
_MEAN_WEIGHT = 1 / 8


class _Turn:
    """One batch's turn at the model: when it entered and left it (``perf_counter_ns``). A
    staged batch withdrawn before its turn begins (its task cancelled) never runs."""

    __slots__ = ("_begun", "_lock", "_withdrawn", "entered", "left")

    def __init__(self) -> None:
        self.entered = 0
        self.left = 0
        self._begun = self._withdrawn = False
        self._lock = threading.Lock()  # begun on a thread, withdrawn on the event loop

    def begin(self) -> bool:
        with self._lock:
            self._begun = not self._withdrawn
            return self._begun

    def withdraw(self) -> bool:
        """Whether it was withdrawn in time: it has not begun, and now never will."""
        with self._lock:
            self._withdrawn = not self._begun
            return self._withdrawn


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    rows: int
    key: Hashable
    """Non-batch shape of every input (``Checked.dims``): only equal keys may share a batch."""
    arrived: float
    """Event-loop time of submission (the fill deadline counts from the first item's)."""


class Batcher:
    def __init__(self, config: ModelConfig, runtime: Runtime, executor: ThreadPoolExecutor,
                 metrics: WorkerMetrics, statistics: VersionCounters | None = None) -> None:
        """``statistics``: where the version's Triton statistics are counted (its own, unless
        the worker's ``WorkerStatistics`` gives the counters every load of it shares)."""
        self._config = config
        self._label = f"{config.name}:{config.version}"
        self._runtime = runtime
        self._executor = executor
        # Children looked up once: labels() costs more than the observation itself.
        self._queue_wait = metrics.queue_wait.labels(config.name)
        self._batch_size = metrics.batch_size.labels(config.name)
        self._inference = metrics.inference.labels(config.name)
        self._expired = metrics.expired.labels(config.name)
        self._model_errors = metrics.model_errors
        self._statistics = statistics or VersionCounters()
        self._max_rows = config.batching.max_batch_size
        self._max_delay = config.batching.max_batch_latency_ms / 1000
        self._fill = config.batching.wait is BatchWait.FILL
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._threads = config.concurrency.max_concurrency
        # One slot more than the threads (the staged batch); the threads' own semaphore keeps
        # the model to max_concurrency batches at once, whatever the executor's size.
        self._slots = asyncio.Semaphore(self._threads + 1)
        self._turns = threading.Semaphore(self._threads)
        self._freed_or_full = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Future[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._may_inline = config.format is ModelFormat.TORCHSCRIPT
        self._inline = False
        self._model_s: float | None = None
        """Moving mean of the model's own time per batch, in seconds."""

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._form_batches(), name=f"batcher {self._label}")
        self._loop_task.add_done_callback(self._loop_ended)

    def submit(self, delivery: Delivery) -> None:
        """Queue one delivery for batching (called on the event loop, never blocks).

        Its request was validated against this version's signature (``Signature
        .validate_request``) by whoever built it: the facade, or the consumer of what producers
        put on the queue.
        """
        checked = delivery.request.checked
        # An isolated delivery's key equals no other: it runs in a batch of its own.
        key = object() if delivery.isolated else checked.dims
        self._pending.append(_Item(delivery, checked.rows, key,
                                   asyncio.get_running_loop().time()))
        self._pending_rows += checked.rows
        self._idle.clear()
        self._wakeup.set()
        if self._pending_rows >= self._max_rows:
            self._full.set()
            self._freed_or_full.set()

    async def wait_idle(self) -> None:
        """Until nothing is pending, running or being replied to and acked (the next submit
        ends that state again; the batcher keeps running)."""
        while True:
            await self._idle.wait()
            if not self._settling:
                return
            await asyncio.wait(set(self._settling))  # asyncio.wait: cancelling us spares them

    async def drain(self, timeout: float) -> None:
        """Finish everything submitted (bounded), then stop; what is left goes back to the queue."""
        self._stopping = True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("batcher %s: drain timed out after %.1fs", self._label, timeout)
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._running):
            task.cancel()
        leftovers, self._pending = list(self._pending), deque()
        self._pending_rows = 0
        await _put_back([i.delivery for i in leftovers])
        await asyncio.gather(*self._running, return_exceptions=True)
        await asyncio.gather(*self._settling, return_exceptions=True)  # theirs included

    async def _form_batches(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            try:
                await self._until_staging()
                if self._fill:
                    await self._wait_for_fill()
                batch = self._take()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                self._update_idle()
                continue
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    async def _until_staging(self) -> None:
        """Returns once a thread is free, or a full batch is pending to be staged."""
        while len(self._running) >= self._threads and (
                self._inline or self._pending_rows < self._max_rows):
            self._freed_or_full.clear()
            await self._freed_or_full.wait()

    async def _wait_for_fill(self) -> None:
        # A fixed deadline from the first arrival; the wait ends early when the batch is full.
        deadline = self._pending[0].arrived + self._max_delay
        while self._pending_rows < self._max_rows:
            self._full.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._full.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        now = time.time()
        loop_now = asyncio.get_running_loop().time()
        batch: list[_Item] = []
        expired: list[_Item] = []
        kept: deque[_Item] = deque()
        rows = 0
        key: Hashable = None
        while self._pending and rows < self._max_rows:
            item = self._pending.popleft()
            if item.delivery.request.deadline <= now or item.delivery.abandoned:
                expired.append(item)
                self._pending_rows -= item.rows
            elif not batch or (item.key == key and rows + item.rows <= self._max_rows):
                key = item.key
                batch.append(item)
                rows += item.rows
                self._pending_rows -= item.rows
            else:
                kept.append(item)
        kept.extend(self._pending)
        self._pending = kept
        if expired:
            self._expired.inc(len(expired))
            self._statistics.failed([_queued_ns(i, now, loop_now) for i in expired])
            self._settle([i.delivery for i in expired], None)
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        started = time.time()
        began = time.perf_counter_ns()
        loop_now = asyncio.get_running_loop().time()
        for item in batch:
            if item.delivery.request.published:
                self._queue_wait.observe(started - item.delivery.request.published)
        queued = [_queued_ns(i, started, loop_now) for i in batch]
        rows = sum(i.rows for i in batch)
        self._batch_size.observe(rows)
        replies: list[PredictReply]
        turn = _Turn()
        try:
            outputs = await self._predict(_parts(batch), turn, lone=len(batch) == 1)
            replies = self._split(batch, outputs, rows)
            ready = time.perf_counter_ns()
            self._statistics.succeeded(rows, queued, turn.entered - began,
                                       turn.left - turn.entered, ready - turn.left)
        except Exception as exc:
            self._model_errors.labels(self._config.name, type(exc).__name__).inc()
            log.error("model %s failed on a batch of %d rows: %s: %s",
                      self._label, rows, type(exc).__name__, exc)
            error: InfernoError = exc if isinstance(exc, InfernoError) else ModelFailed(
                f"Model '{self._label}' failed: {type(exc).__name__}: {exc}")
            replies = [PredictReply(error=error)] * len(batch)
            self._statistics.failed(queued, time.perf_counter_ns() - began)
        except asyncio.CancelledError:
            deliveries = [i.delivery for i in batch]
            if turn.withdraw():  # a staged batch: back to the queue, as pending requests go
                self._shield(_put_back(deliveries))
                raise
            replies = [PredictReply(error=WorkerFailed("Worker stopped during the batch"))
                       ] * len(batch)
            self._statistics.failed(queued, time.perf_counter_ns() - began)
            self._settle(deliveries, replies)
            raise
        self._settle([i.delivery for i in batch], replies)

    async def _predict(self, parts: Parts, turn: _Turn, lone: bool) -> dict[str, Array]:
        """The model's outputs on one batch (``turn`` times it; ``lone``: it holds one
        request): on the version's thread, or on the event loop while it is a TorchScript model
        whose batches take less than the hand-off to a thread and back."""
        if self._inline or (lone and self._lone_inline()):
            outputs = _timed(self._runtime.predict_parts, parts, turn)
        else:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._on_thread, parts, turn)
        took = (turn.left - turn.entered) / 1e9
        self._inference.observe(took)
        self._model_s = took if self._model_s is None else self._model_s + (
            took - self._model_s) * _MEAN_WEIGHT
        if self._may_inline:
            self._inline = self._model_s < (INLINE_OUT_S if self._inline else INLINE_IN_S)
        return outputs

    def _lone_inline(self) -> bool:
        return (self._may_inline and self._model_s is not None and self._model_s < INLINE_LONE_S
                and not self._pending and len(self._running) == 1)  # the one running is this

    def _on_thread(self, parts: Parts, turn: _Turn) -> dict[str, Array]:
        with self._turns:
            return _timed(self._runtime.predict_parts, parts, turn)

    def _split(self, batch: list[_Item], outputs: dict[str, Array], rows: int
               ) -> list[PredictReply]:
        for name, array in outputs.items():
            got = array.shape[0] if array.ndim else 0
            if got != rows:
                raise ModelFailed(f"Model '{self._label}' returned {got} rows in output "
                                  f"'{name}' for a batch of {rows} rows")
        replies = []
        start = 0
        for item in batch:
            end = start + item.rows
            wanted = item.delivery.request.checked.outputs or outputs.keys()
            replies.append(PredictReply({n: outputs[n][start:end] for n in wanted}))
            start = end
        return replies

    def _settle(self, deliveries: list[Delivery], replies: list[PredictReply] | None) -> None:
        """Reply (unless expired) then ack, in a task cancellation cannot interrupt."""
        self._shield(_reply_and_ack(deliveries, replies))

    def _shield(self, settling: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(asyncio.shield(settling))
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher %s: settling failed", self._label, exc_info=task.exception())

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        self._freed_or_full.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("batcher %s: batch task crashed", self._label, exc_info=task.exception())
        self._update_idle()

    def _update_idle(self) -> None:
        if not self._pending and not self._running:
            self._idle.set()

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        log.error("batcher %s: batching loop crashed; restarting", self._label,
                  exc_info=task.exception())
        self.start()


def _timed(predict: Callable[[Parts], dict[str, Array]], parts: Parts, turn: _Turn
           ) -> dict[str, Array]:
    if not turn.begin():
        raise asyncio.CancelledError  # withdrawn while it waited for a thread
    turn.entered = time.perf_counter_ns()
    try:
        return predict(parts)
    finally:
        turn.left = time.perf_counter_ns()


def _queued_ns(item: _Item, now: float, loop_now: float) -> int:
    """Nanoseconds from the item's publish (epoch ``now``), or its arrival here when it has no
    publish time (event-loop time ``loop_now``), to now; never negative (clocks of two hosts)."""
    published = item.delivery.request.published
    waited = now - published if published else loop_now - item.arrived
    return max(0, int(waited * 1e9))


def _parts(batch: list[_Item]) -> Parts:
    # Not concatenated here: the runtime does it where the rows go (a staging buffer on a GPU).
    names = batch[0].delivery.request.inputs.keys()
    return {n: [i.delivery.request.inputs[n] for i in batch] for n in names}


async def _put_back(deliveries: list[Delivery]) -> None:
    await asyncio.gather(*(d.reject(requeue=True) for d in deliveries), return_exceptions=True)


async def _reply_and_ack(deliveries: list[Delivery], replies: list[PredictReply] | None) -> None:
    for index, delivery in enumerate(deliveries):
        try:
            if replies is not None:
                await delivery.reply(replies[index])
            await delivery.ack()
        except Exception:
            # Not acked: the broker redelivers it (at-least-once) once this channel goes away.
            log.exception("could not reply to request %s", delivery.request.request_id)
