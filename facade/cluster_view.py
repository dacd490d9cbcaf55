"""The facade's cached view of the cluster state, refreshed on change events and periodically.

The predict path reads only this cache: it never waits on the state store (a slow or absent store
must not slow serving). Admin calls wait here for workers to report a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from common.errors import ModelNotLoaded, StateUnavailable, Unavailable
from common.metrics import FacadeMetrics
from common.model.repository import ModelEntry, ModelRepository
from common.model.shared_versions import replicate
from common.state.store import ModelState, StateEvent, StateStore, WorkerInfo
from common.supervisor import Supervisor, stop_tasks

__all__ = ["ClusterView"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClusterView:
    def __init__(self, store: StateStore, repository: ModelRepository, metrics: FacadeMetrics,
                 refresh_interval_s: float, grace_s: float,
                 supervisor: Supervisor | None = None) -> None:
        self.repository = repository
        self.supervisor = supervisor or Supervisor()
        """Runs the view's loops; its loops that are down make the view not ready."""
        self.models: dict[str, ModelState] = {}
        self.workers: list[WorkerInfo] = []
        self._serving: dict[tuple[str, int], int] = {}
        self._overridden: dict[tuple[str, int], tuple[ModelEntry, str, ModelEntry]] = {}
        """(model, version) → (repository entry, override, the entry with it applied)."""
        self._store = store
        self._metrics = metrics
        self._interval = refresh_interval_s
        self._grace = grace_s
        self._store_failed = False
        self._unreplicable: set[tuple[str, int]] = set()
        self._keep_until = 0.0
        self._changed = asyncio.Event()
        self._stale = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # Subscribed before the first read: no change between the two is missed.
        first: list[AsyncIterator[StateEvent]] = [self._store.events()]
        await self.refresh()

        def watch() -> Coroutine[Any, Any, None]:
            if first:
                return self._watch(first.pop())
            # A restart after a failure: changes may have been missed meanwhile.
            self._stale.set()
            return self._watch(self._store.events())

        self._tasks = [self.supervisor.start("view events", watch),
                       self.supervisor.start("view refresh", self._refresh_forever)]

    async def aclose(self) -> None:
        await stop_tasks(self._tasks)

    async def refresh(self) -> None:
        models = await self._store.models()
        workers = await self._store.workers()
        now = time.monotonic()
        if self._store_failed:
            # The store is back after an outage that may have outlived the heartbeats' TTL:
            # keep the workers we knew for one TTL while they beat again, rather than turn
            # every request away as "no worker" in the meantime.
            self._store_failed = False
            self._keep_until = now + self._grace
        if now < self._keep_until:
            seen = {w.worker_id for w in workers}
            workers += [w for w in self.workers if w.worker_id not in seen]
        desired = {(name, version) for name, state in models.items() for version in state.desired}
        # A refusal holds while the version stays desired: loaded again after an unload (the
        # files put anew), it is tried again.
        self._unreplicable &= desired
        for name, version in sorted(desired):
            await self.replicate(name, version)
        self.models, self.workers = models, workers
        serving: dict[tuple[str, int], int] = {}
        for worker in self.workers:
            for name, versions in worker.loaded.items():
                for version in versions:
                    serving[name, version] = serving.get((name, version), 0) + 1
        self._serving = serving
        for name in self.repository.names():
            self._metrics.live_workers.labels(name).set(
                sum(1 for w in self.workers if name in w.loaded))
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    async def replicate(self, name: str, version: int) -> None:
        """Write a version that a load's model files made on another replica into this
        facade's repository, from the state store's copy (``common.model.shared_versions``); a
        version the store has no files of stays unknown here, and so does one whose files fail
        (logged once)."""
        if self.repository.holds(name, version) or (name, version) in self._unreplicable:
            return
        try:
            await replicate(self._store, self.repository, name, version)
        except StateUnavailable:
            raise
        except Exception as exc:
            self._unreplicable.add((name, version))
            log.error("cannot write %s version %d from the state store: %s: %s", name, version,
                      type(exc).__name__, exc)

    def serving(self, name: str, version: int) -> int:
        """Live workers that report the version loaded."""
        return self._serving.get((name, version), 0)

    def route(self, name: str, version: int | None) -> ModelEntry:
        """The model version a predict call goes to, or the error that says why none."""
        state = self.models.get(name)
        if state is None or not state.desired:
            self.repository.versions(name)  # ModelNotFound for a name nobody knows
            raise ModelNotLoaded(
                f"Model '{name}' is not loaded; load it with POST /v1/models:load", name)
        if version is None:
            version = state.active
            if version is None:
                raise ModelNotLoaded(f"Model '{name}' has no active version; "
                                     f"pin one of {sorted(state.desired)} or activate one", name)
        if version not in state.desired:
            self.repository.get(name, version)  # ModelNotFound for a version that never existed
            raise ModelNotLoaded(f"Model '{name}' version {version} is not loaded "
                                 f"(loaded: {', '.join(map(str, sorted(state.desired)))})",
                                 name)
        if not self.serving(name, version):
            why = self.load_failure(name, version)
            raise Unavailable(f"No live worker serves model '{name}' version {version} yet"
                              + (f"; it failed to load: {why}" if why else ""))
        return self.entry(name, version)

    def entry(self, name: str, version: int | None) -> ModelEntry:
        """The repository's entry of ``version`` (``None``: the newest) as the cluster loads
        it: with the configuration override the state holds for it (a load with Triton's
        ``config``); ``ModelNotFound`` for a model or version the repository lacks."""
        base = self.repository.get(name, version)
        state = self.models.get(name)
        override = state.overrides.get(base.config.version) if state is not None else None
        if not override:
            return base
        # Built once per override: routing reads it for every request.
        key = (name, base.config.version)
        cached = self._overridden.get(key)
        if cached is None or cached[0] is not base or cached[1] != override:
            cached = (base, override, replace(base, config=base.config.with_override(override)))
            self._overridden[key] = cached
        return cached[2]

    def load_failure(self, name: str, version: int) -> str | None:
        """Why a live worker could not load the version (the latest attempt), if one failed."""
        attempts = [w.failed[key] for w in self.workers if (key := f"{name}:{version}") in w.failed]
        return max(attempts)[1] if attempts else None

    def ready(self) -> tuple[bool, list[str]]:
        """Ready when every active model version has a live worker and no supervised loop is
        down; else what is missing (``<model>:<version>``, ``loop:<name>``)."""
        missing = [f"{s.name}:{s.active}" for s in self.models.values()
                   if s.active is not None and not self.serving(s.name, s.active)]
        missing += [f"loop:{name}" for name in sorted(self.supervisor.down())]
        return not missing, missing

    async def wait_for(self, check: Callable[[], T | None], timeout: float) -> T | None:
        """Wait until ``check()`` returns something other than None (re-checked on each change)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (result := check()) is None:
                    await self._changed.wait()
                return result
        return check()

    async def _watch(self, events: AsyncIterator[StateEvent]) -> None:
        async for _ in events:
            self._stale.set()

    async def _refresh_forever(self) -> None:
        # Events mark the view stale; the timer catches what events cannot say (expired workers).
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stale.wait()
            self._stale.clear()
            try:
                await self.refresh()
            except Exception as exc:
                self._store_failed = True
                log.warning("state refresh failed, serving on the last known state: %s", exc)
