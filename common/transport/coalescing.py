"""Which requests share a queue message: the facade's publish lanes.

The eager rule of the worker's batcher, applied to publishing: each model version (routing key)
has a ``Lane`` with at most one publish awaiting the broker's confirm. A request that finds its
lane free is published at once, alone, so a lone request waits for nothing. Requests that arrive
while the lane is busy gather into groups, each bounded by the version's ``max_batch_size`` rows
and a byte cap; when the confirm comes, the next group goes as one envelope
(``common.wire.envelope``). The busier the facade, the longer a confirm takes and the more
requests share a message, so the per-message cost falls as load rises.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from common.wire.messages import PredictReply, PredictRequest

__all__ = ["Lane", "Pending"]


@dataclass(slots=True)
class Pending:
    """One request waiting to be published, then for its reply."""

    request: PredictRequest
    correlation_id: str
    future: asyncio.Future[PredictReply]
    """The reply; failed with the publish's error when the publish fails."""
    nbytes: int
    """Bytes of its input tensors (the envelope's byte cap counts these)."""


class Lane:
    """One routing key's publishes: busy while a publish awaits its confirm."""

    __slots__ = ("_bytes", "_rows", "busy", "groups")

    def __init__(self) -> None:
        self.busy = False
        self.groups: deque[list[Pending]] = deque()
        """Requests gathered while busy, oldest group first; each group is one message."""
        self._rows = 0  # of the newest group, the only one still gathering
        self._bytes = 0

    def gather(self, pending: Pending, max_rows: int, max_bytes: int) -> None:
        """Add ``pending`` to the newest group, or start a new one when it would pass either
        bound (a request alone past a bound still goes, alone)."""
        rows = pending.request.checked.rows
        if (not self.groups or self._rows + rows > max_rows
                or self._bytes + pending.nbytes > max_bytes):
            self.groups.append([])
            self._rows = self._bytes = 0
        self.groups[-1].append(pending)
        self._rows += rows
        self._bytes += pending.nbytes
