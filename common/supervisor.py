"""Background tasks: supervised loops that never die silently, and a bounded stop.

Every long-running task of a process (the state watchers, the facade's view refresh, the
worker's reconciler and heartbeat) runs under a ``Supervisor``: an exception that escapes the
loop is logged with its traceback and the loop is started again after an exponential backoff
(``Backoff``: 0.1 s doubling to 5 s, back to the start once a run lasted longer than the cap).
From the failure until the restart the loop is *down*: ``Supervisor.down()`` names it and why,
and the readiness endpoints answer not-ready with it. A cancelled loop stops (that is how its
owner stops it), and a loop that returns has finished: neither is restarted.

A supervisor is only a registry of what is down plus the restart policy; each owner keeps the
tasks ``start`` returns and stops them with ``stop_tasks``. One supervisor may serve several
owners (embedded mode: the facade's view and the worker share one, so the facade's readiness
also tells of the worker's loops).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Backoff", "LoopFactory", "Supervisor", "stop_tasks"]

log = logging.getLogger(__name__)

LoopFactory = Callable[[], Coroutine[Any, Any, None]]
"""Makes a fresh run of a loop: called again for every restart."""

ChangeListener = Callable[[str, str | None], None]
"""Called with a loop's name and why it is down (``None``: it is up again)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 5.0

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows ``failures`` failures in a row (≥ 1)."""
        return min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1))


class Supervisor:
    """Runs loops, restarts the ones that fail, and knows which are down."""

    def __init__(self, backoff: Backoff | None = None,
                 on_change: ChangeListener | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._down: dict[str, str] = {}
        self._listeners: list[ChangeListener] = [on_change] if on_change else []

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def down(self) -> dict[str, str]:
        """Loop name → why it is down (its last exception), for every loop down now."""
        return dict(self._down)

    def start(self, name: str, loop: LoopFactory) -> asyncio.Task[None]:
        """Run ``loop()`` in a task named ``name``, restarted whenever it raises. Cancel the
        task (``stop_tasks``) to stop it."""
        return asyncio.create_task(self._supervise(name, loop), name=name)

    async def _supervise(self, name: str, loop: LoopFactory) -> None:
        failures = 0
        try:
            while True:
                started = time.monotonic()
                try:
                    await loop()
                    return  # finished: nothing to restart
                except Exception as exc:
                    if time.monotonic() - started > self.backoff.max_s:
                        failures = 0  # it had been running well: start the backoff over
                    failures += 1
                    delay = self.backoff.delay(failures)
                    log.error("background loop %r failed; restarting in %.2fs", name, delay,
                              exc_info=exc)
                    self._set(name, f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)
                self._set(name, None, "restarted")
        finally:
            self._set(name, None, "stopped")  # stopped or finished: not down any more

    def _set(self, name: str, why: str | None, what: str = "") -> None:
        if why is None:
            if self._down.pop(name, None) is None:
                return
            log.info("background loop %r %s", name, what)
        else:
            self._down[name] = why
        for listener in self._listeners:
            try:
                listener(name, why)
            except Exception:
                log.exception("supervisor listener failed")


RECANCEL_S = 1.0
"""How often a task still running after its cancellation is cancelled again (long enough for a
``finally`` that closes a connection to finish first)."""


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel the tasks and wait for them, at most ``timeout`` seconds (a client library stuck
    in a read must not hold a shutdown forever). A task still running is cancelled again every
    ``RECANCEL_S``: a cancellation can be swallowed (Python 3.11's ``asyncio.wait_for``, which the
    Redis and AMQP clients use, loses one that coincides with the completion of what it waits
    for, and the loop goes on)."""
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, RECANCEL_S))
    for task in pending:
        log.warning("task %s did not stop within %.0fs of its cancellation",
                    task.get_name(), timeout)
