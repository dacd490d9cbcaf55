"""A worker channel's prefetch, kept in rows while the broker counts messages.

A worker holds, per model version, about ``max_batch_size * max_concurrency * 2`` rows
unacknowledged: a batch forming for every runner slot while as many run. RabbitMQ's prefetch
counts messages, and a message is one request or an envelope of up to ``max_batch_size``
(common/wire/envelope.py). A fixed message count would let one worker take ``max_batch_size``
times its share of a backlog under load, work that an idle worker beside it could be running. So
the consumer reports the rows of every message it receives, and ``RowPrefetch`` moves the
channel's ``basic.qos`` to ``rows / (mean rows per message)``, never below one message per runner
slot and a forming batch each (``floor``). The mean is a moving average over the last few dozen
messages; the prefetch changes only when it is off by more than a quarter (each change is a round
trip), one change at a time. aio-pika's robust channel restores the last value after a
reconnection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["QosChannel", "RowPrefetch"]

log = logging.getLogger(__name__)

_WEIGHT = 1 / 16
"""Weight of the newest message in the moving mean of rows per message."""
_SLACK = 0.25
"""The prefetch changes once it is off its target by more than this fraction."""


class QosChannel(Protocol):
    async def set_qos(self, prefetch_count: int) -> object: ...


class RowPrefetch:
    __slots__ = ("_change", "_channel", "_floor", "_mean", "_rows", "count")

    def __init__(self, channel: QosChannel, rows: int, floor: int) -> None:
        self._channel = channel
        self._rows = rows
        self._floor = min(floor, rows)
        self._mean = 1.0  # until messages say otherwise, a message is one row
        self.count = rows
        """The channel's prefetch, in messages (set by the caller before the first message)."""
        self._change: asyncio.Task[None] | None = None

    @property
    def target(self) -> int:
        return min(self._rows, max(self._floor, round(self._rows / self._mean)))

    def received(self, rows: int) -> None:
        """One message of ``rows`` rows arrived (every member of an envelope counted)."""
        self._mean += (max(rows, 1) - self._mean) * _WEIGHT
        target = self.target
        if self._change is None and abs(target - self.count) > self.count * _SLACK:
            self._change = asyncio.create_task(self._set(target))

    async def _set(self, count: int) -> None:
        try:
            await self._channel.set_qos(prefetch_count=count)
            self.count = count
        except Exception as exc:  # the channel is closing: the next channel starts afresh
            log.debug("prefetch not changed to %d: %s", count, exc)
        finally:
            self._change = None

    def cancel(self) -> None:
        if self._change is not None:
            self._change.cancel()
