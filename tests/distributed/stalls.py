"""Stuck processes, made for real: with ``stall/`` on ``PYTHONPATH`` (its ``sitecustomize``),
SIGUSR2 blocks a process's main thread on a lock for good, as the deadlock of issue 21 did, so
its event loop never runs again. What the tests of stalls and hard stops share."""

from __future__ import annotations

import asyncio
from pathlib import Path

from inferno.hard_stop import GRACE_S

SEAM = Path(__file__).with_name("stall")
BLOCKED = "main thread blocked"
"""What the seam writes on stderr as it blocks."""
DRAIN_S = 2
STALL_ENV = {"PYTHONPATH": str(SEAM), "INFERNO_FACADE_STALL_TIMEOUT_S": "2",
             "INFERNO_REQUEST_TIMEOUT_MS": str(DRAIN_S * 1000),
             "INFERNO_DRAIN_TIMEOUT_S": str(DRAIN_S)}
"""The seam, a stalled facade child found after 2 s, and 2 s drains (a facade drains for its
request timeout, a worker for its drain timeout)."""
STOPPED_WITHIN_S = DRAIN_S + GRACE_S + 10
"""How long a SIGTERM-ed process whose loop is stuck may take to end: its HardStop's deadline,
and 10 s of slack for a loaded machine."""


def text_of(log: Path) -> str:
    return log.read_text()


def times_logged(text: str, log: Path) -> int:
    return text_of(log).count(text)


async def until_logged(text: str, log: Path, count: int = 1, timeout_s: float = 60) -> None:
    """Until ``text`` is in the log ``count`` times (another process: poll, bounded)."""
    try:
        async with asyncio.timeout(timeout_s):
            while times_logged(text, log) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{text!r} not logged {count} time(s) in {timeout_s} s; the log "
                             f"ends:\n{text_of(log)[-6000:]}") from None
