"""A worker's heartbeats announce changes only: facades re-read the state on every event, so a
heartbeat that says nothing new must only renew the worker's lease.

The worker runs on the in-memory broker and state store (real implementations, checked by the
contract suites) over the test model repository, with nothing preloaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from common.config import WorkerSettings
from common.metrics import WorkerMetrics
from common.model.repository import ModelRepository
from common.state.memory import InMemoryStateStore
from common.state.store import RESYNC, EventKind, StateEvent
from common.transport.memory import InMemoryBroker
from tests.unit.conftest import TEST_MODELS
from worker.reconciler import Reconciler


@pytest.fixture
async def store() -> AsyncIterator[InMemoryStateStore]:
    store = InMemoryStateStore()
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture
async def worker(store: InMemoryStateStore) -> Reconciler:
    broker = InMemoryBroker()
    await broker.start()
    return Reconciler(WorkerSettings(preload=[]), broker, store, ModelRepository(TEST_MODELS),
                  WorkerMetrics(CollectorRegistry()))


async def next_event(events: AsyncIterator[StateEvent]) -> StateEvent:
    return await anext(events)


async def test_only_a_heartbeat_with_news_is_an_event(worker: Reconciler,
                                                      store: InMemoryStateStore) -> None:
    events = store.events()
    await worker.heartbeat()  # the first one: facades learn of the worker
    await worker.heartbeat()  # nothing new: the lease only
    await store.set_active("sum", 1)  # a marker: the next event, if the second was quiet
    assert await next_event(events) == StateEvent(EventKind.WORKER, worker.worker_id)
    assert await next_event(events) == StateEvent(EventKind.MODEL, "sum")
    assert [w.worker_id for w in await store.workers()] == [worker.worker_id]


async def test_a_store_that_resynced_hears_from_the_worker_again(
        worker: Reconciler, store: InMemoryStateStore) -> None:
    await worker.heartbeat()
    events = store.events()
    await worker.handle_event(RESYNC)  # the store may have come back empty
    await worker.heartbeat()
    assert await next_event(events) == StateEvent(EventKind.WORKER, worker.worker_id)
