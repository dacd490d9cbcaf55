"""Which requests share a queue message: the facade's publish lanes.

Per model version (routing key) and per event-loop turn, the facade gathers the requests it has
decoded into groups, each bounded by the version's ``max_batch_size`` rows and a byte cap, and at
the end of the turn publishes each group as one envelope (``common.wire.envelope``), or as a
plain message when it holds one request. A request never waits for more than the rest of its own
turn, so a lone request goes at once; under load one turn decodes the requests that arrived
together (a batch's replies release that many clients at once), and the per-message cost of the
facade, the broker and the worker is shared by all of them.
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
    published: bool = False
    """Handed to the broker: a caller that leaves now must tell the workers."""


class Lane:
    """One routing key's requests of one event-loop turn, in groups of one message each."""

    __slots__ = ("_bytes", "_rows", "groups")

    def __init__(self) -> None:
        self.groups: list[list[Pending]] = []
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
