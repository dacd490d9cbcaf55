"""The reconciler: it converges a worker's loaded versions to the desired state, points each
model's alias at the active version, heartbeats what it serves, and in burst mode drains the queues
and returns.

The worker runs on the in-memory broker and state store (real implementations, checked by the
contract suites) over ``versioned_repo`` (conftest.py), with nothing preloaded unless a test says
so. ``RecordingBroker`` is the in-memory broker with a record of the calls a worker makes
at the seam; the store is the seam on the other side: tests change the desired state there and
wait for the worker's heartbeats there, on the store's change events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from common.errors import ModelNotLoaded
from common.metrics import WorkerMetrics
from common.model.config import ModelConfig
from common.model.repository import ModelRepository
from common.settings import WorkerSettings
from common.state.memory import InMemoryStateStore
from common.state.statistics import VersionStatistics
from common.state.store import RESYNC, EventKind, ModelState, StateEvent, WorkerInfo
from common.transport.broker import Delivery, DeliveryHandler, Subscription
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictReply, PredictRequest
from tests.unit.conftest import FLAKY_ERROR, fix_flaky, sum_request
from worker.reconciler import Reconciler

_ids = itertools.count()


class RecordingBroker(InMemoryBroker):
    """The in-memory broker, recording the topology calls a worker makes and counting the
    requests queued (``wait_requests`` awaits them instead of sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.topology: list[tuple[str, str, int, frozenset[int]]] = []
        """(call, model, version, the versions the alias routed to just before the call)."""
        self.aliases: dict[str, set[int]] = {}
        """Model → versions its alias routes to, as RabbitMQ's bindings would say."""
        self.requests = 0
        self._requested = asyncio.Event()
        self.hold_deliveries = False
        """Deliveries reach the worker only when it cancels its consumer (as AMQP's in flight
        arrive before its cancel-ok): a worker stopped at once serves exactly one prefetch."""

    def _record(self, call: str, model: str, version: int) -> None:
        self.topology.append((call, model, version, frozenset(self.aliases.get(model, ()))))

    async def bind_alias(self, model: str, version: int) -> None:
        self._record("bind", model, version)
        await super().bind_alias(model, version)
        self.aliases.setdefault(model, set()).add(version)

    async def unbind_alias(self, model: str, version: int) -> None:
        self._record("unbind", model, version)
        await super().unbind_alias(model, version)
        self.aliases.get(model, set()).discard(version)

    async def delete_queue(self, model: str, version: int) -> None:
        self._record("delete", model, version)
        await super().delete_queue(model, version)
        self.aliases.get(model, set()).discard(version)  # its bindings go with the queue

    async def consume(self, config: ModelConfig, handler: DeliveryHandler,
                      prefetch: int) -> Subscription:
        if not self.hold_deliveries:
            return await super().consume(config, handler, prefetch)
        held: list[Delivery] = []
        return HeldUntilCancel(await super().consume(config, held.append, prefetch),
                               held, handler)

    async def request(self, request: PredictRequest, coalesce_rows: int = 1) -> PredictReply:
        self.requests += 1
        self._requested.set()
        return await super().request(request)  # queued before it first waits

    async def wait_requests(self, total: int) -> None:
        """Until ``total`` requests in all have been queued."""
        async with asyncio.timeout(5):
            while self.requests < total:
                self._requested.clear()
                await self._requested.wait()


class HeldUntilCancel(Subscription):
    def __init__(self, consumer: Subscription, held: list[Delivery],
                 handler: DeliveryHandler) -> None:
        self._consumer, self._held, self._handler = consumer, held, handler

    async def cancel(self) -> None:
        await self._consumer.cancel()
        while self._held:
            self._handler(self._held.pop(0))


class ForgetfulStore(InMemoryStateStore):
    """The in-memory store, able to come back empty as Redis without persistence does."""

    def lose_everything(self) -> None:
        self._models.clear()
        self._workers.clear()
        self._publish(RESYNC)  # what a store that re-subscribed sends


@pytest.fixture
async def store() -> AsyncIterator[ForgetfulStore]:
    store = ForgetfulStore()
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture
def broker() -> RecordingBroker:
    return RecordingBroker()


MakeWorker = Callable[..., Reconciler]


@pytest.fixture
async def make_worker(versioned_repo: Path, broker: RecordingBroker, store: ForgetfulStore
                      ) -> AsyncIterator[MakeWorker]:
    """``make_worker(models=["sum"], ...)``: a worker with these settings, stopped after."""
    made: list[Reconciler] = []

    def make(**settings: Any) -> Reconciler:
        ws = WorkerSettings(**{"preload": [], "device": "cpu", "drain_timeout_s": 5, **settings})
        repository = ModelRepository(versioned_repo)
        repository.scan()
        worker = Reconciler(ws, broker, store, repository, WorkerMetrics(CollectorRegistry()))
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()


@pytest.fixture
def worker(make_worker: MakeWorker) -> Reconciler:
    return make_worker()


def sum_request_of(version: int, row: list[float]) -> PredictRequest:
    return sum_request("sum", version, [row], request_id=f"r{next(_ids)}")


async def total(broker: InMemoryBroker, version: int, row: list[float]) -> float:
    reply = await broker.request(sum_request_of(version, row))
    return float(reply.result()["total"][0])


async def until(store: InMemoryStateStore, check: Callable[[], Awaitable[bool]],
                timeout: float = 10) -> None:
    """Until ``check()`` holds, looked at again on each of the store's change events."""
    events = store.events()
    async with asyncio.timeout(timeout):
        while not await check():
            await anext(events)


async def heartbeat_of(store: InMemoryStateStore, worker: Reconciler) -> WorkerInfo | None:
    return next((w for w in await store.workers() if w.worker_id == worker.worker_id), None)


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


async def test_the_heartbeat_carries_batch_counters_without_an_event(
        make_worker: MakeWorker, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    worker = make_worker(models=["sum"])
    await store.set_active("sum", 1)
    await worker.reconcile()  # loads sum v1 and announces it
    heartbeat = await heartbeat_of(store, worker)
    assert heartbeat is not None
    assert heartbeat.statistics.versions == {"sum:1": VersionStatistics()}  # none run yet
    events = store.events()
    for row in ([1, 2], [3, 4], [5, 6]):  # one after the other: a batch each
        await total(broker, 1, row)
    await worker.heartbeat()
    heartbeat = await heartbeat_of(store, worker)
    assert heartbeat is not None
    counted = heartbeat.statistics.versions["sum:1"]
    assert (counted.execution_count, counted.inference_count, counted.success_count) == (3, 3, 3)
    await store.set_active("sum", 1)  # a marker: the next event, if the heartbeat was quiet
    assert await next_event(events) == StateEvent(EventKind.MODEL, "sum")


async def test_a_store_that_resynced_hears_from_the_worker_again(
        worker: Reconciler, store: InMemoryStateStore) -> None:
    await worker.heartbeat()
    events = store.events()
    await worker.handle_event(RESYNC)  # the store may have come back empty
    await worker.heartbeat()
    assert await next_event(events) == StateEvent(EventKind.WORKER, worker.worker_id)


async def test_loads_the_desired_versions_of_the_models_it_serves_and_only_those(
        make_worker: MakeWorker, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    worker = make_worker(models=["sum"])
    await store.set_active("sum", 2)
    await store.set_desired("sum", 1, loaded=True)
    await store.set_active("flaky", 1)  # desired, but not a model this worker serves
    await worker.reconcile()
    assert worker.loaded == {"sum": (1, 2)}
    heartbeat = await heartbeat_of(store, worker)
    assert heartbeat is not None and heartbeat.loaded == {"sum": (1, 2)}
    assert heartbeat.failed == {}  # flaky was never tried
    assert await total(broker, 1, [1, 2]) == 3
    assert await total(broker, 2, [3, 4]) == 7
    with pytest.raises(ModelNotLoaded):
        await broker.request(sum_request("flaky", 1, [[1.0]]))


async def test_unloads_a_version_no_longer_desired_and_deletes_its_queue(
        worker: Reconciler, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    await store.set_active("sum", 2)
    await store.set_desired("sum", 1, loaded=True)
    await worker.reconcile()
    assert worker.loaded == {"sum": (1, 2)}
    await store.set_desired("sum", 1, loaded=False)
    await worker.reconcile()
    assert worker.loaded == {"sum": (2,)}
    assert [(call, v) for call, _, v, _ in broker.topology if call == "delete"] == [("delete", 1)]
    with pytest.raises(ModelNotLoaded):
        await total(broker, 1, [1])
    assert await total(broker, 2, [5]) == 5
    heartbeat = await heartbeat_of(store, worker)
    assert heartbeat is not None and heartbeat.loaded == {"sum": (2,)}


async def test_a_failed_load_is_reported_and_retried_when_the_model_changes(
        make_worker: MakeWorker, versioned_repo: Path, store: InMemoryStateStore) -> None:
    await store.set_active("flaky", 1)
    worker = make_worker()
    await worker.start()

    async def failed() -> bool:
        heartbeat = await heartbeat_of(store, worker)
        return heartbeat is not None and "flaky:1" in heartbeat.failed

    await until(store, failed)
    heartbeat = await heartbeat_of(store, worker)
    assert heartbeat is not None
    attempted, why = heartbeat.failed["flaky:1"]
    assert why == FLAKY_ERROR and attempted <= time.time()

    fix_flaky(versioned_repo)
    await worker.reconcile()  # the state did not change: the failure is not retried yet
    assert worker.loaded == {}

    async def loaded() -> bool:
        heartbeat = await heartbeat_of(store, worker)
        return heartbeat is not None and heartbeat.loaded == {"flaky": (1,)}

    await store.set_desired("flaky", 1, loaded=True)  # what an admin :load writes
    await until(store, loaded)
    heartbeat = await heartbeat_of(store, worker)
    assert heartbeat is not None and heartbeat.failed == {}


async def test_the_alias_moves_to_the_active_version_bound_before_the_old_is_unbound(
        worker: Reconciler, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    await store.set_active("sum", 1)
    await worker.reconcile()
    assert broker.topology == [("bind", "sum", 1, frozenset())]
    await store.set_active("sum", 2)  # version 1 stays desired: a hot swap
    await worker.reconcile()
    assert worker.loaded == {"sum": (1, 2)}
    # The alias routed to version 1 until version 2 was bound, then to both, never to none.
    assert broker.topology[1:] == [("bind", "sum", 2, frozenset({1})),
                                   ("unbind", "sum", 1, frozenset({1, 2}))]
    assert broker.aliases == {"sum": {2}}
    await worker.reconcile()  # nothing changed: no call
    assert len(broker.topology) == 3


async def test_resync_claims_the_preloaded_models_again(make_worker: MakeWorker,
                                                        store: ForgetfulStore) -> None:
    worker = make_worker(preload=["sum"], heartbeat_interval_s=0.05)
    await worker.start()
    assert await store.models() == {"sum": ModelState("sum", 2, frozenset({2}))}

    async def serving() -> bool:
        heartbeat = await heartbeat_of(store, worker)
        return heartbeat is not None and heartbeat.loaded == {"sum": (2,)}

    await until(store, serving)
    store.lose_everything()  # Redis came back without its data

    async def claimed() -> bool:
        return "sum" in await store.models()

    await until(store, claimed)
    assert await store.models() == {"sum": ModelState("sum", 2, frozenset({2}))}
    await until(store, serving)  # it heartbeats into the new store, still serving
    assert worker.loaded == {"sum": (2,)}


async def test_burst_answers_everything_queued_then_stops(
        worker: Reconciler, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    # What a previous worker left: the desired state, and the queue producers filled since.
    await store.set_active("sum", 1)
    await broker.declare_queue("sum", 1, max_length=100)
    # More than the worker's prefetch (2 x max_batch_size 16): some wait in the queue.
    rows = [[float(i), 1.0] for i in range(40)]
    replies = [asyncio.create_task(total(broker, 1, row)) for row in rows]
    await broker.wait_requests(len(rows))
    assert await broker.queue_depth("sum", 1) == len(rows)

    assert await worker.burst() == {}
    assert all(reply.done() for reply in replies)
    assert [await reply for reply in replies] == [i + 1.0 for i in range(40)]
    assert await broker.queue_depth("sum", 1) == 0
    assert await store.workers() == []  # it left the cluster
    assert worker.loaded == {}
    assert [call for call, *_ in broker.topology] == ["bind"]  # the queue stays for the next


async def test_burst_with_nothing_queued_returns_at_once(
        worker: Reconciler, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    await store.set_active("sum", 1)
    async with asyncio.timeout(10):
        assert await worker.burst() == {}
    assert broker.aliases == {"sum": {1}}  # the queue and its alias, ready for producers
    assert await store.workers() == []


async def test_burst_reports_the_versions_it_could_not_load(
        worker: Reconciler, broker: RecordingBroker, store: InMemoryStateStore) -> None:
    await store.set_active("sum", 1)
    await store.set_active("flaky", 1)
    await broker.declare_queue("sum", 1, max_length=100)
    reply = asyncio.create_task(total(broker, 1, [2, 2]))
    await broker.wait_requests(1)
    assert await worker.burst() == {"flaky:1": FLAKY_ERROR}
    assert await reply == 4


async def test_a_stopped_burst_stops_without_draining_the_rest(
        worker: Reconciler, broker: RecordingBroker, store: InMemoryStateStore,
        caplog: pytest.LogCaptureFixture) -> None:
    await store.set_active("sum", 1)
    await broker.declare_queue("sum", 1, max_length=100)
    rows = [[float(i), 1.0] for i in range(40)]  # more than the prefetch of 32
    replies = [asyncio.create_task(total(broker, 1, row)) for row in rows]
    await broker.wait_requests(len(rows))
    stopping = asyncio.Event()
    stopping.set()  # the stop signal came while it was loading
    broker.hold_deliveries = True  # else under load a batch is answered and more delivered

    with caplog.at_level(logging.INFO, logger="worker.reconciler"):
        assert await worker.burst(stopping) == {}

    assert "burst: drained" not in caplog.text
    assert await broker.queue_depth("sum", 1) > 0  # left for the next worker
    assert await store.workers() == [] and worker.loaded == {}
    for reply in replies:
        reply.cancel()
    await asyncio.gather(*replies, return_exceptions=True)


class BrokenSubscription(ForgetfulStore):
    """The in-memory store whose next event subscription fails on its first read (once): what
    a watcher meets when its store breaks in a way nobody handled."""

    def __init__(self) -> None:
        super().__init__()
        self.break_next = False

    def events(self) -> AsyncIterator[StateEvent]:
        if self.break_next:
            self.break_next = False
            return self._broken()
        return super().events()

    async def _broken(self) -> AsyncIterator[StateEvent]:
        raise ValueError("a bug in the watcher")
        yield  # pragma: no cover - makes this an async generator


async def test_a_failed_watcher_is_restarted_and_follows_changes_again(
        versioned_repo: Path, broker: RecordingBroker) -> None:
    from common.supervisor import Backoff, Supervisor

    store = BrokenSubscription()
    changes: list[tuple[str, str | None]] = []
    restarted = asyncio.Event()

    def record(name: str, why: str | None) -> None:
        changes.append((name, why))
        if why is None:
            restarted.set()

    supervisor = Supervisor(Backoff(initial_s=0.001, max_s=0.01), on_change=record)
    repository = ModelRepository(versioned_repo)
    repository.scan()
    worker = Reconciler(WorkerSettings(preload=[], device="cpu", state_reconcile_interval_s=3600),
                        broker, store, repository, WorkerMetrics(CollectorRegistry()),
                        supervisor)
    store.break_next = True  # the worker's watcher
    await worker.start()
    try:
        async with asyncio.timeout(10):
            await restarted.wait()
        assert changes == [("worker events", "ValueError: a bug in the watcher"),
                           ("worker events", None)]
        # Only an event can wake the reconciler (an hour between timed passes): the restarted
        # watcher hears this one.
        await store.set_active("sum", 1)
        await until(store, lambda: _loaded(worker, {"sum": (1,)}))
        assert supervisor.down() == {}
    finally:
        await worker.stop()


async def _loaded(worker: Reconciler, loaded: dict[str, tuple[int, ...]]) -> bool:
    return worker.loaded == loaded
