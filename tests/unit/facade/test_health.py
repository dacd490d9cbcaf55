"""Readiness tells of the facade's background loops: while one is down (it failed and waits
for its restart) ``/health/ready`` is 503 and names it; once restarted it is ready again.

The view runs on a real ``InMemoryStateStore`` whose event subscriptions can be made to fail
(``BrokenEvents``: at that seam, what a watcher meets when its store breaks in a way nobody
handled); a worker is a heartbeat written to the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.state.memory import InMemoryStateStore
from common.state.store import StateEvent, WorkerInfo
from common.supervisor import Backoff, Supervisor
from facade.cluster_view import ClusterView
from facade.health import health_router
from tests.unit.conftest import SAMPLE_MODELS

MINUTE = 60.0


class BrokenEvents(InMemoryStateStore):
    """The in-memory store whose first ``failures`` event subscriptions raise on first read."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.subscriptions = 0
        self.subscribed = asyncio.Event()

    def events(self) -> AsyncIterator[StateEvent]:
        self.subscriptions += 1
        self.subscribed.set()
        if self.subscriptions <= self.failures:
            return self._broken()
        return super().events()

    async def _broken(self) -> AsyncIterator[StateEvent]:
        raise ValueError("an event nobody expected")
        yield  # pragma: no cover - makes this an async generator


async def view_on(store: InMemoryStateStore, supervisor: Supervisor) -> ClusterView:
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    view = ClusterView(store, repository, FacadeMetrics(CollectorRegistry()), MINUTE, MINUTE,
                       supervisor=supervisor)
    await view.start()
    return view


async def served(store: InMemoryStateStore) -> None:
    await store.set_active("mlp", 2)
    await store.put_worker(WorkerInfo("w1", "test", "cpu", {"mlp": (2,)}), ttl_s=MINUTE)


def client_of(view: ClusterView) -> httpx.AsyncClient:
    api = FastAPI()
    api.include_router(health_router(view, CollectorRegistry()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://facade")


async def test_ready_is_503_naming_a_loop_that_is_down() -> None:
    store = BrokenEvents(failures=1)
    await served(store)
    down = asyncio.Event()
    supervisor = Supervisor(Backoff(initial_s=3600, max_s=3600),  # stays down: no restart yet
                            on_change=lambda name, why: down.set() if why else None)
    view = await view_on(store, supervisor)
    async with client_of(view) as client:
        async with asyncio.timeout(10):
            await down.wait()
        response = await client.get("/health/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["waiting_for"] == ["loop:view events"]
        assert body["down"] == {"view events": "ValueError: an event nobody expected"}
        await view.aclose()  # stopped: not down any more
        assert (await client.get("/health/ready")).status_code == 200


async def test_a_restarted_watcher_follows_events_and_ready_again() -> None:
    store = BrokenEvents(failures=2)
    await served(store)
    changes: list[str | None] = []
    supervisor = Supervisor(Backoff(initial_s=0.001, max_s=0.01),
                            on_change=lambda name, why: changes.append(why))
    view = await view_on(store, supervisor)
    try:
        # Two failed subscriptions, then a third that works: the view follows events again.
        async with asyncio.timeout(10):
            while store.subscriptions < 3:
                store.subscribed.clear()
                await store.subscribed.wait()
        await store.set_active("mlp", 1)
        await store.put_worker(WorkerInfo("w1", "test", "cpu", {"mlp": (1,)}), ttl_s=MINUTE)
        async with asyncio.timeout(10):
            assert await view.wait_for(
                lambda: True if view.models["mlp"].active == 1 and view.ready()[0] else None,
                MINUTE)
        assert changes == ["ValueError: an event nobody expected", None] * 2
        async with client_of(view) as client:
            response = await client.get("/health/ready")
        assert response.status_code == 200 and response.json() == {"status": "ready"}
    finally:
        await view.aclose()


@pytest.mark.parametrize("route", ["/health/live"])
async def test_liveness_does_not_depend_on_loops(route: str) -> None:
    store = BrokenEvents(failures=1)
    down = asyncio.Event()
    supervisor = Supervisor(Backoff(initial_s=3600, max_s=3600),
                            on_change=lambda name, why: down.set() if why else None)
    view = await view_on(store, supervisor)
    try:
        async with asyncio.timeout(10):
            await down.wait()
        async with client_of(view) as client:
            assert (await client.get(route)).status_code == 200
    finally:
        await view.aclose()
