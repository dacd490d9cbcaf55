"""The state store of one process (embedded mode): dictionaries, expiring heartbeats, events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from common.state.store import EventKind, ModelState, StateEvent, StateStore, WorkerInfo

__all__ = ["InMemoryStateStore"]

_CLOSED = None


class InMemoryStateStore(StateStore):
    def __init__(self) -> None:
        self._models: dict[str, ModelState] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._files: dict[tuple[str, int], dict[str, bytes]] = {}
        self._subscribers: set[asyncio.Queue[StateEvent | None]] = set()

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(_CLOSED)

    async def models(self) -> dict[str, ModelState]:
        return dict(self._models)

    async def init_model(self, name: str, version: int) -> ModelState:
        if name not in self._models:
            return self._put(ModelState(name, version, frozenset({version})))
        return self._models[name]

    async def set_active(self, name: str, version: int) -> ModelState:
        state = self._models.get(name, ModelState(name))
        return self._put(replace(state, active=version, desired=state.desired | {version}))

    async def set_desired(self, name: str, version: int, loaded: bool,
                          override: str | None = None) -> ModelState:
        state = self._models.get(name, ModelState(name))
        overrides = dict(state.overrides)
        if not loaded or override is not None:
            overrides.pop(version, None)
        if loaded:
            if override:
                overrides[version] = override
            return self._put(replace(state, desired=state.desired | {version},
                                     overrides=overrides))
        active = None if state.active == version else state.active
        return self._put(replace(state, active=active, desired=state.desired - {version},
                                 overrides=overrides))

    async def put_worker(self, info: WorkerInfo, ttl_s: float, announce: bool = True) -> None:
        self._workers[info.worker_id] = (info, time.monotonic() + ttl_s)
        if announce:
            self._publish(StateEvent(EventKind.WORKER, info.worker_id))

    async def put_version_files(self, name: str, version: int,
                                files: Mapping[str, bytes]) -> None:
        self._files[name, version] = dict(files)

    async def version_files(self, name: str, version: int) -> dict[str, bytes] | None:
        return self._files.get((name, version))

    async def remove_worker(self, worker_id: str) -> None:
        if self._workers.pop(worker_id, None) is not None:
            self._publish(StateEvent(EventKind.WORKER, worker_id))

    async def workers(self) -> list[WorkerInfo]:
        now = time.monotonic()
        return [info for info, expires in self._workers.values() if expires > now]

    def events(self) -> AsyncIterator[StateEvent]:
        # Subscribed on the call, not on first iteration: no change between the two is lost.
        queue: asyncio.Queue[StateEvent | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[StateEvent | None]) -> AsyncIterator[StateEvent]:
        try:
            while (event := await queue.get()) is not _CLOSED:
                yield event
        finally:
            self._subscribers.discard(queue)

    def _put(self, state: ModelState) -> ModelState:
        self._models[state.name] = state
        self._publish(StateEvent(EventKind.MODEL, state.name))
        return state

    def _publish(self, event: StateEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
