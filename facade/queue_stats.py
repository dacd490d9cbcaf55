"""The queues as the broker counts them, read in the background for ``/metrics`` and the console.

``QueueWatch`` asks the broker, every ``INFERNO_QUEUE_STATS_INTERVAL_S``, for the requests
waiting in and the consumers of the queue of every model version the cluster view knows (each
model's active and desired versions, and whatever a live worker reports loaded), and for the
dead-letter queue's depth. It sets ``inferno_queue_messages{model,version}``,
``inferno_queue_consumers{model,version}`` and ``inferno_dead_letter_messages``, removes the
label sets of versions that left the view, and keeps the reading for other facade code:
``snapshot()``. Nothing on the predict path waits on it.

An unreachable broker (``BrokerUnavailable``) is logged once and clears the reading, gauges
included, until the broker answers again: a stale depth would read as the truth. Anything else
escapes the pass, and the supervisor logs it and restarts the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import MappingProxyType

from common.errors import BrokerUnavailable
from common.metrics import FacadeMetrics
from common.supervisor import Supervisor, stop_tasks
from common.transport.broker import Broker, QueueStats
from facade.cluster_view import ClusterView

__all__ = ["QueueWatch"]

log = logging.getLogger(__name__)

_EMPTY: Mapping[tuple[str, int], QueueStats] = MappingProxyType({})


class QueueWatch:
    def __init__(self, broker: Broker, view: ClusterView, metrics: FacadeMetrics,
                 interval_s: float, supervisor: Supervisor) -> None:
        self._broker = broker
        self._view = view
        self._metrics = metrics
        self._interval = interval_s
        self._supervisor = supervisor
        self._snapshot = _EMPTY
        self._dead_letters: int | None = None
        self._failing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [self._supervisor.start("queue stats", self._poll_forever)]

    async def aclose(self) -> None:
        await stop_tasks(self._tasks)

    def snapshot(self) -> Mapping[tuple[str, int], QueueStats]:
        """``(model, version)`` → its queue at the last reading (read-only; empty before the
        first reading and while the broker cannot be read)."""
        return self._snapshot

    @property
    def dead_letters(self) -> int | None:
        """Messages in the dead-letter queue at the last reading; ``None`` where the broker
        has none (embedded mode) or before a reading."""
        return self._dead_letters

    def versions(self) -> list[tuple[str, int]]:
        """Every model version the view knows: active, desired, loaded by a live worker."""
        known: set[tuple[str, int]] = set()
        for state in self._view.models.values():
            known.update((state.name, v) for v in state.desired)
            if state.active is not None:
                known.add((state.name, state.active))
        for worker in self._view.workers:
            known.update((name, v) for name, versions in worker.loaded.items() for v in versions)
        return sorted(known)

    async def poll(self) -> None:
        """One reading of every known version's queue, then the gauges."""
        try:
            stats = {key: await self._broker.queue_stats(*key) for key in self.versions()}
            dead = await self._broker.dead_letter_depth()
        except BrokerUnavailable as exc:
            if not self._failing:
                log.warning("queue stats unavailable, not exported until the broker answers: %s",
                            exc)
            self._failing = True
            self._publish({}, None)
            return
        if self._failing:
            log.info("queue stats available again")
            self._failing = False
        self._publish(stats, dead)

    def _publish(self, stats: dict[tuple[str, int], QueueStats], dead: int | None) -> None:
        metrics = self._metrics
        for model, version in self._snapshot.keys() - stats.keys():
            metrics.queue_messages.remove(model, str(version))
            metrics.queue_consumers.remove(model, str(version))
        for (model, version), queue in stats.items():
            metrics.queue_messages.labels(model, str(version)).set(queue.messages)
            metrics.queue_consumers.labels(model, str(version)).set(queue.consumers)
        if dead is None:
            metrics.dead_letter_messages.remove()
        else:
            metrics.dead_letter_messages.set(dead)
        self._snapshot = MappingProxyType(stats)
        self._dead_letters = dead

    async def _poll_forever(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self._interval)  # the reading's period, not a synchronisation
