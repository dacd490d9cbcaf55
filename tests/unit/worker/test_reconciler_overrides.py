"""The reconciler and configuration overrides (a load with Triton's ``config``): a worker loads
each version with the override the state holds for it, reloads a loaded version whose override
changed, and reports in its heartbeat which override each version runs.

Real in-memory broker and store over ``versioned_repo`` (tests/unit/conftest.py); the store is
where the tests set the desired state and read the heartbeats, the broker where they send
requests and look at the version's queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from common.metrics import WorkerMetrics
from common.model.repository import ModelRepository
from common.settings import WorkerSettings
from common.state.memory import InMemoryStateStore
from common.state.store import WorkerInfo
from common.transport.broker import NO_QUEUE, QueueStats
from common.transport.memory import InMemoryBroker
from tests.unit.conftest import sum_request
from worker.reconciler import Reconciler

THREE_AT_ONCE = '{"concurrency":{"max_concurrency":3}}'


@pytest.fixture
async def parts(versioned_repo: Path) -> AsyncIterator[tuple[Reconciler, InMemoryBroker,
                                                             InMemoryStateStore]]:
    broker, store = InMemoryBroker(), InMemoryStateStore()
    repository = ModelRepository(versioned_repo)
    repository.scan()
    worker = Reconciler(WorkerSettings(preload=[], device="cpu", drain_timeout_s=5), broker,
                        store, repository, WorkerMetrics(CollectorRegistry()))
    yield worker, broker, store
    await worker.stop()


async def heartbeat(store: InMemoryStateStore, worker: Reconciler) -> WorkerInfo:
    return next(w for w in await store.workers() if w.worker_id == worker.worker_id)


async def total(broker: InMemoryBroker, row: list[float]) -> float:
    reply = await broker.request(sum_request("sum", 1, [row]))
    return float(reply.result()["total"][0])


async def test_a_version_loads_and_reloads_with_its_override(
        parts: tuple[Reconciler, InMemoryBroker, InMemoryStateStore]) -> None:
    worker, broker, store = parts
    await store.set_desired("sum", 1, loaded=True, override=THREE_AT_ONCE)
    await worker.reconcile()
    beat = await heartbeat(store, worker)
    # The capacity is the runner's max_concurrency: the override's, not model.yaml's 1.
    assert (beat.loaded, beat.overrides, beat.capacity) == ({"sum": (1,)},
                                                            {"sum:1": THREE_AT_ONCE}, 3)
    # A load from model.yaml (no override) reloads it: same queue, one consumer, still served.
    await store.set_desired("sum", 1, loaded=True, override="")
    await worker.reconcile()
    beat = await heartbeat(store, worker)
    assert (beat.loaded, beat.overrides, beat.capacity) == ({"sum": (1,)}, {}, 1)
    assert await broker.queue_stats("sum", 1) == QueueStats(messages=0, consumers=1)
    assert await total(broker, [1, 2]) == 3
    # Nothing changed: nothing reloads (the heartbeat would say so with an event).
    events = store.events()
    await worker.reconcile()
    await store.set_active("sum", 1)  # a marker: the next event, if the pass was quiet
    assert (await anext(events)).name == "sum"


async def test_a_reload_that_fails_is_reported_and_leaves_no_queue(
        parts: tuple[Reconciler, InMemoryBroker, InMemoryStateStore]) -> None:
    worker, broker, store = parts
    await store.set_desired("sum", 1, loaded=True)
    await worker.reconcile()
    # Out of model.yaml's bounds (a facade refuses it before it is written; a store written
    # by hand may hold it): the version cannot load with it.
    await store.set_desired("sum", 1, loaded=True, override='{"batching":{"max_batch_size":0}}')
    await worker.reconcile()
    beat = await heartbeat(store, worker)
    assert beat.loaded == {} and beat.overrides == {}
    assert "max_batch_size" in beat.failed["sum:1"][1]
    assert await broker.queue_stats("sum", 1) == NO_QUEUE
