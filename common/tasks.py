"""Stopping background tasks without hanging on one that ignores its cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_tasks"]

log = logging.getLogger(__name__)


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel the tasks and wait for them, at most ``timeout`` seconds (a client library stuck
    in a read must not hold a shutdown forever)."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in stuck:
        log.warning("task %s did not stop within %.0fs of its cancellation",
                    task.get_name(), timeout)
