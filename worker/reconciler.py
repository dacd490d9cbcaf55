"""A worker process's core: converge loaded runners to the desired state, and heartbeat.

The reconciler runs on every model change event and every ``state_reconcile_interval_s`` as a
fallback. It loads the desired versions of the models this worker serves and unloads the rest,
each with the configuration override the state holds for it (a load with Triton's ``config``),
and reloads a version whose override changed; after each change the worker heartbeats at once,
so admin calls waiting on the facade return without waiting for the next interval.

``burst()`` is the other way to run (arq's ``burst=True``; ``inferno worker --burst``): reconcile
once, answer what is queued for the versions loaded, and stop once their queues are empty and
nothing is in flight. A Kubernetes Job drains what asynchronous producers queued, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any

from common import heap
from common.metrics import WorkerMetrics
from common.model.repository import ModelRepository
from common.model.shared_versions import replicate
from common.settings import WorkerSettings
from common.state.store import RESYNC, EventKind, StateEvent, StateStore, WorkerInfo
from common.supervisor import Supervisor, stop_tasks
from common.transport.broker import Broker
from worker.loaded_model import LoadedModel
from worker.runtime import resolve_device
from worker.statistics import WorkerStatistics

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

Key = tuple[str, int]
RETRY_FAILED_LOAD_S = 60.0
BURST_POLL_S = 0.02
"""How often a burst worker asks the broker again while a queue is not empty but its batcher
is idle (its requests are on their way to the consumer: the broker has no "empty" event)."""


class Reconciler:
    def __init__(self, settings: WorkerSettings, broker: Broker, store: StateStore,
                 repository: ModelRepository, metrics: WorkerMetrics,
                 supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.supervisor = supervisor or Supervisor()
        """Runs the event watcher, the reconciler and the heartbeat, restarting any that fails;
        ``supervisor.down()`` names those that are down."""
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._broker = broker
        self._store = store
        self._repository = repository
        self._metrics = metrics
        self.statistics = WorkerStatistics(settings.statistics_interval_s)
        """Triton's statistics of every version run here, reported by the heartbeats."""
        self._runners: dict[Key, LoadedModel] = {}
        self._overrides: dict[Key, str] = {}
        """The configuration override each runner was loaded with (``""``: none)."""
        self._failed: dict[Key, tuple[float, str]] = {}
        self._aliased: dict[str, int] = {}
        """Model → the version this worker bound the model's alias to."""
        self._started_at = time.time()
        self._announced: WorkerInfo | None = None
        """What the last heartbeat that published an event said."""
        self._device = str(resolve_device(settings.device))
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._orphans: set[Key] = set()
        """Queues of unloaded versions whose deletion failed: deleted on the next pass."""

    @property
    def loaded(self) -> dict[str, tuple[int, ...]]:
        loaded: dict[str, list[int]] = {}
        for name, version in sorted(self._runners):
            loaded.setdefault(name, []).append(version)
        return {name: tuple(versions) for name, versions in loaded.items()}

    @property
    def overrides(self) -> dict[str, str]:
        """``name:version`` → the override a loaded version runs with (none: not listed)."""
        return {f"{n}:{v}": override for (n, v), override in sorted(self._overrides.items())
                if override}

    async def start(self) -> None:
        """Claim the preloaded models' newest versions, then start converging in the background."""
        await self._claim_preloads()
        await self.heartbeat()
        # Subscribed before the first pass: no change after it is missed.
        first: list[AsyncIterator[StateEvent]] = [self._store.events()]

        def watch() -> Coroutine[Any, Any, None]:
            if first:
                return self._watch(first.pop())
            # A restart after a failure: changes may have been missed meanwhile.
            self._announced = None
            self._dirty.set()
            return self._watch(self._store.events())

        self._tasks = [
            self.supervisor.start("worker events", watch),
            self.supervisor.start("worker reconciler", self._reconcile_forever),
            self.supervisor.start("worker heartbeat", self._heartbeat_forever),
        ]

    async def _claim_preloads(self) -> None:
        """Make the preloaded models' newest versions desired, for models the store never saw."""
        for name in self._repository.names():
            if self.settings.preloads(name):
                newest = max(self._repository.versions(name))
                await self._store.init_model(name, newest)

    async def burst(self, stopping: asyncio.Event | None = None) -> dict[str, str]:
        """Reconcile once, serve until every loaded version's queue is empty and nothing is in
        flight, then stop gracefully (``stop``). Model changes during the burst are not
        followed. Returns the versions that failed to load (``name:version`` → why): requests
        queued for them are still there. Once ``stopping`` is set (a stop signal), or when
        cancelled, it stops gracefully without draining the rest of the queues."""
        try:
            await self._claim_preloads()
            await self.reconcile()
            await self.heartbeat()
            # Heartbeats go on: facades route to a burst worker while it drains.
            self._tasks = [self.supervisor.start("worker heartbeat", self._heartbeat_forever)]
            if await self._drained_unless(stopping or asyncio.Event()):
                log.info("burst: drained %s",
                         ", ".join(f"{n}:{v}" for n, v in sorted(self._runners))
                         or "nothing (no version loaded)")
        finally:
            await self.stop()
        return {f"{n}:{v}": why for (n, v), (_, why) in self._failed.items()}

    async def _drained_unless(self, stopping: asyncio.Event) -> bool:
        """``_drained``, unless ``stopping`` is set first: whether the queues were drained.
        The event decides, not the cancellation of the burst alone: a cancellation that lands
        in the broker and Redis client calls before the drain can be lost (under CI load a
        burst stopped by SIGTERM went on to drain every queue and logged it), and Python
        3.11's ``asyncio.wait_for``, which those clients use, is known to swallow one that
        coincides with the completion of what it waits for."""
        drain = asyncio.create_task(self._drained(), name="burst drain")
        halt = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({drain, halt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.cancel()
            drain.cancel()  # not awaited: stop() settles what it was waiting for
        if not drain.done() or drain.cancelled():
            return False
        drain.result()  # its error, if it failed
        return True

    async def _drained(self) -> None:
        """Until every loaded version's queue is empty and its batcher idle.

        A batcher's idleness is an event; the depth of a queue is a question to the broker.
        Between the two a request can be on its way to the consumer (AMQP delivers more once it
        has our acks), so a queue found not empty is asked again after ``BURST_POLL_S``. (The
        in-memory broker hands the next request over within the ack: there it never waits.) A
        request still on its way when the check passes is answered all the same: ``stop``
        cancels the consumer (the broker confirms after its last delivery), then drains the
        batcher.
        """
        async def drain(runner: LoadedModel) -> None:
            while True:
                await runner.wait_idle()
                if not await self._broker.queue_depth(runner.name, runner.version):
                    return
                await asyncio.sleep(BURST_POLL_S)

        await asyncio.gather(*(drain(r) for r in list(self._runners.values())))

    async def stop(self) -> None:
        """Graceful: stop consuming, finish in-flight batches and reply, leave the cluster."""
        await stop_tasks(self._tasks)
        async with self._lock:
            await asyncio.gather(*(self._unload(key, delete_queue=False)
                                   for key in list(self._runners)))
        with contextlib.suppress(Exception):
            await self._store.remove_worker(self.worker_id)

    async def reconcile(self) -> None:
        """Load and unload runners until they match the desired state (one pass)."""
        async with self._lock:
            models = await self._store.models()
            want = {(name, version): state.overrides.get(version, "")
                    for name, state in models.items() if self.settings.serves(name)
                    for version in state.desired}
            have = set(self._runners)
            # A failed load is retried after a while (the broker may have been away), or at
            # once when the model's state changes (see _watch).
            now = time.time()
            self._failed = {k: f for k, f in self._failed.items()
                            if now - f[0] < RETRY_FAILED_LOAD_S}
            to_load = sorted(want.keys() - have - set(self._failed))
            if any(not self._repository.holds(*key) for key in to_load):
                # A version written since the last scan (a load's model files, in a shared
                # repository directory): one rescan a pass, whatever the repository's own pace;
                # one still missing is written from the state store's copy (``_load``).
                self._repository.scan()
            to_unload = sorted(have - want.keys())
            to_reload = sorted(k for k in have & want.keys() if self._overrides[k] != want[k])
            changed = bool(to_load or to_unload or to_reload)
            if changed:
                results = await asyncio.gather(
                    *(self._load(key, want[key]) for key in to_load),
                    *(self._unload(key, delete_queue=True) for key in to_unload),
                    *(self._reload(key, want[key]) for key in to_reload),
                    return_exceptions=True)
                # Every load and unload has ended before the lock is released: one that failed
                # must not leave the others running into the next pass.
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    raise failures[0]  # likely the broker away: the rest waits for the next pass
            if (to_load or to_reload) and self.settings.gc_freeze:
                heap.settle()  # what the models allocated is here to stay
            await self._point_aliases({n: s.active for n, s in models.items()})
            self._orphans -= want.keys()  # wanted again: its queue is in use once more
            for key in sorted(self._orphans):
                await self._broker.delete_queue(*key)
                self._orphans.discard(key)
        if changed:
            await self.heartbeat()

    async def _point_aliases(self, active: dict[str, int | None]) -> None:
        """Route each model's alias (what async producers publish to) to its active version.

        The new binding comes first, then the old one goes: the broker routes every message
        somewhere throughout (for a moment to both, which at-least-once delivery allows).
        """
        for name in {n for n, _ in self._runners}:
            target = active.get(name)
            if (target is not None and (name, target) in self._runners
                    and self._aliased.get(name) != target):
                await self._broker.bind_alias(name, target)
                previous = self._aliased.get(name)
                if previous is not None and (name, previous) in self._runners:
                    await self._broker.unbind_alias(name, previous)
                self._aliased[name] = target
            elif (name, target) not in self._runners and name in self._aliased:
                # Another worker serves the active version now; stop routing it here.
                previous = self._aliased.pop(name)
                if (name, previous) in self._runners:
                    await self._broker.unbind_alias(name, previous)

    async def heartbeat(self) -> None:
        info = WorkerInfo(worker_id=self.worker_id, host=socket.gethostname(),
                          device=self._device, loaded=self.loaded,
                          capacity=sum(r.entry.config.concurrency.max_concurrency
                                       for r in self._runners.values()),
                          started_at=self._started_at, overrides=self.overrides,
                          failed={f"{n}:{v}": why for (n, v), why in self._failed.items()},
                          statistics=self.statistics.report())
        try:
            await self._store.put_worker(info, ttl_s=self.settings.heartbeat_ttl_s,
                                         announce=info != self._announced)
            self._announced = info
        except Exception as exc:
            self._announced = None  # the store may have lost us: announce the next one
            log.warning("heartbeat failed: %s", exc)

    async def _load(self, key: Key, override: str) -> None:
        name, version = key
        try:
            await replicate(self._store, self._repository, name, version)
            entry = self._repository.get(name, version)
            entry = replace(entry, config=entry.config.with_override(override))
            self._runners[key] = await LoadedModel.load(
                entry, self._broker, self.settings, self._metrics, self.statistics)
            self._overrides[key] = override
        except Exception as exc:
            self._failed[key] = (time.time(), f"{type(exc).__name__}: {exc}")
            log.error("cannot load %s version %d: %s: %s", name, version,
                      type(exc).__name__, exc)

    async def _unload(self, key: Key, delete_queue: bool) -> None:
        """Drain the queue, stop consuming, release the model, delete the queue. The runner
        stays in the table (reported in heartbeats, facades keep routing to it) until it no
        longer consumes: a failure before that (the broker away while the queue drains)
        leaves it loaded and consuming, as reported, for the next pass to unload."""
        runner = self._runners[key]
        name, version = key
        if delete_queue:
            await self._wait_queue_empty(name, version)
        await runner.stop(self.settings.drain_timeout_s)
        self._forget(key)
        if delete_queue:
            try:
                await self._broker.delete_queue(name, version)
            except Exception:
                # Nothing consumes it any more; the next pass deletes it.
                self._orphans.add(key)
                raise

    def _forget(self, key: Key) -> None:
        """The version's runner has stopped: it is no longer loaded here."""
        name, version = key
        del self._runners[key], self._overrides[key]
        if self._aliased.get(name) == version:
            del self._aliased[name]  # the binding goes with the queue
        self._metrics.model_loaded.labels(name, str(version)).set(0)
        log.info("unloaded %s version %d", name, version)

    async def _reload(self, key: Key, override: str) -> None:
        """Load a loaded version again with another override. The old runner finishes what
        it was given and stops consuming; the queue stays, holding what arrives for the new
        runner, and until that one runs the version is reported loaded with the old override
        (facades go on routing to it, admin calls go on waiting)."""
        old = self._runners[key]
        await old.stop(self.settings.drain_timeout_s)
        await self._load(key, override)
        if self._runners[key] is old:
            # It failed to load (recorded, reported): nothing will consume its queue, so its
            # requests are answered now rather than left to their deadlines.
            self._forget(key)
            await self._broker.delete_queue(*key)

    async def _wait_queue_empty(self, name: str, version: int) -> None:
        # Requests published before the facades saw the unload are still answered. The broker
        # offers no "queue empty" event, so this polls, bounded by the drain timeout.
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while time.monotonic() < deadline and await self._broker.queue_depth(name, version):  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def _watch(self, events: AsyncIterator[StateEvent]) -> None:
        async for event in events:
            await self.handle_event(event)

    async def handle_event(self, event: StateEvent) -> None:
        if event == RESYNC:
            self._announced = None
            # The store may have come back empty (Redis without persistence): claim the
            # preloaded models again rather than unload everything.
            try:
                await self._claim_preloads()
            except Exception as exc:
                log.warning("could not claim preloaded models: %s", exc)
        if event.kind is EventKind.MODEL:
            self._failed = {k: v for k, v in self._failed.items() if k[0] != event.name}
            self._dirty.set()

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed; retrying")
            if not self.settings.state_reconcile_enabled:
                return  # one pass at start-up only
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.state_reconcile_interval_s):
                    await self._dirty.wait()
            self._dirty.clear()

    async def _heartbeat_forever(self) -> None:
        while True:
            # Every interval, and soon after counters change (WorkerStatistics.report_due).
            await self.statistics.report_due(self.settings.heartbeat_interval_s)
            await self.heartbeat()
