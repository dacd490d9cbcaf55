"""Which requests share a queue message: the facade's publish lanes.

The eager rule of the worker's batcher, applied to publishing: each model version (routing key)
has a ``Lane`` that counts its publishes awaiting the broker's confirm. A request that finds none
is published at once, alone, so a lone request waits for nothing. Otherwise the facade is busy
with that version: the requests decoded in the same event-loop turn gather into groups, each
bounded by the version's ``max_batch_size`` rows and a byte cap, and at the end of the turn each
group goes as one envelope (``common.wire.envelope``). The busier the facade, the more requests one
turn decodes and the more share a message, so the per-message cost falls as load rises; a request
never waits for more than the rest of its own turn.
"""

from __future__ import annotations

import asyncio
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
    """One routing key's publishes in flight, and the groups gathering in this turn."""

    __slots__ = ("_bytes", "_groups", "_rows", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        """Publishes awaiting the broker's confirm."""
        self._groups: list[list[Pending]] = []
        self._rows = 0  # of the newest group, the only one still gathering
        self._bytes = 0

    def gather(self, pending: Pending, max_rows: int, max_bytes: int) -> bool:
        """Add ``pending`` to the newest group, or start a new one when it would pass either
        bound (a request alone past a bound still goes, alone). True for the turn's first
        request: the caller schedules ``take`` for the end of the turn."""
        first = not self._groups
        rows = pending.request.checked.rows
        if first or self._rows + rows > max_rows or self._bytes + pending.nbytes > max_bytes:
            self._groups.append([])
            self._rows = self._bytes = 0
        self._groups[-1].append(pending)
        self._rows += rows
        self._bytes += pending.nbytes
        return first

    def take(self) -> list[list[Pending]]:
        """The groups gathered in this turn, one message each; the next turn starts afresh."""
        groups, self._groups = self._groups, []
        return groups
