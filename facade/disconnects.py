"""Noticing a client that leaves while its predict waits, so that nobody computes it for nobody.

ASGI reports a closed connection as an ``http.disconnect`` from ``receive`` once the body has
been read. Listening for it costs a task, which most predicts would pay for nothing: they are
answered within a millisecond or two. So a predict starts listening only when it is still waiting
after ``WATCH_AFTER_S``. Those that wait longer are the ones queued behind a backlog, and those are
the ones whose client may give up. When the client leaves, the predict's task is cancelled:
- a request not yet published is left out of its message;
- a queued request is dropped before its batch (``Delivery.abandoned``): in process directly,
  over RabbitMQ through a cancel notice to every worker (``common.transport.amqp.cancel``);
- a request whose batch already started is computed, and its reply discarded.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

__all__ = ["WATCH_AFTER_S", "DisconnectWatch"]

WATCH_AFTER_S = 0.05


class DisconnectWatch:
    """Watches the current task's client from ``WATCH_AFTER_S`` on until ``stop``."""

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "left")

    def __init__(self, receive: Receive) -> None:
        self.left = False
        """The client went away, and the task was cancelled for it."""
        self._receive = receive
        task = asyncio.current_task()
        if task is None:  # a callback of the loop's: nothing to cancel when the client leaves
            raise RuntimeError("DisconnectWatch must be created inside a task")
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.left = True
            self._task.cancel()

    def stop(self) -> None:
        """The predict is answered, or failed: stop watching, before the response is sent (a
        server reports a completed response as a disconnect too)."""
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def absorb(self) -> bool:
        """After a ``CancelledError``: whether it was this watch's (the task goes on, uncancelled)
        or someone else's, a shutdown, which must propagate."""
        if not self.left:
            return False
        self._task.uncancel()
        return True
