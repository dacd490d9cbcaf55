"""The facade's queue watch (facade/queue_stats.py): which versions it reads, what it exports,
and what a broker that cannot answer does to it (``FlakyBroker`` adds, at the ``Broker`` seam,
the failures of an unreachable RabbitMQ).

The view reads a real ``InMemoryStateStore`` and the sample repository (mlp 1 and 2, bag); the
watch a real ``InMemoryBroker``. ``poll()`` is one reading, called directly where a test needs
one; the background loop is tested on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from common.errors import BrokerUnavailable
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.state.memory import InMemoryStateStore
from common.state.store import WorkerInfo
from common.supervisor import Backoff, Supervisor
from common.transport.broker import NO_QUEUE, QueueStats
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictRequest
from facade.cluster_view import ClusterView
from facade.queue_stats import QueueWatch
from tests.contract.configs import checked
from tests.unit.conftest import SAMPLE_MODELS

MINUTE = 60.0


class FlakyBroker(InMemoryBroker):
    """The in-memory broker, unreachable while ``down`` (``BrokerUnavailable``, as the AMQP
    broker raises then), or broken by a bug (``bug``: any other exception)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.bug: Exception | None = None
        self.asked = 0
        self._asked = asyncio.Event()

    async def queue_stats(self, model: str, version: int) -> QueueStats:
        self.asked += 1
        self._asked.set()
        if self.bug is not None:
            raise self.bug
        if self.down:
            raise BrokerUnavailable("Message broker unavailable: connection refused")
        return await super().queue_stats(model, version)

    async def wait_asked(self, times: int) -> None:
        """Until ``queue_stats`` has been called ``times`` times in all."""
        async with asyncio.timeout(5):
            while self.asked < times:
                self._asked.clear()
                await self._asked.wait()


class Parts:
    def __init__(self, broker: FlakyBroker, store: InMemoryStateStore, view: ClusterView,
                 watch: QueueWatch, registry: CollectorRegistry) -> None:
        self.broker, self.store, self.view, self.watch = broker, store, view, watch
        self.registry = registry

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    broker, store = FlakyBroker(), InMemoryStateStore()
    await store.start()
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    registry = CollectorRegistry()
    metrics = FacadeMetrics(registry)
    supervisor = Supervisor(Backoff(initial_s=0.01, max_s=0.01))
    view = ClusterView(store, repository, metrics, MINUTE, MINUTE, supervisor=supervisor)
    await view.start()
    watch = QueueWatch(broker, view, metrics, interval_s=MINUTE, supervisor=supervisor)
    yield Parts(broker, store, view, watch, registry)
    await watch.aclose()
    await view.aclose()
    await store.aclose()


async def queued(parts: Parts, version: int, count: int) -> list[asyncio.Task[object]]:
    """``count`` requests waiting in mlp's queue of ``version`` (no consumer)."""
    signature = parts.view.repository.get("mlp", version).config.signature
    inputs = {"x": np.zeros((1, 256), np.float32)}
    request = PredictRequest(model="mlp", version=version, inputs=inputs,
                             checked=checked("mlp", signature, inputs),
                             deadline=time.time() + MINUTE, request_id="r",
                             published=time.time())
    await parts.broker.declare_queue("mlp", version, max_length=100)
    tasks: list[asyncio.Task[object]] = [
        asyncio.create_task(parts.broker.request(request)) for _ in range(count)]
    await asyncio.sleep(0)  # one turn: each request is in the queue
    return tasks


def labels(version: int) -> dict[str, str]:
    return {"model": "mlp", "version": str(version)}


async def test_it_reads_every_version_the_view_knows(parts: Parts) -> None:
    await parts.store.init_model("mlp", 2)  # active and desired
    await parts.store.set_desired("mlp", 1, loaded=True)
    await parts.store.put_worker(WorkerInfo(worker_id="w", host="h", device="cpu",
                                            loaded={"bag": (1,)}), ttl_s=MINUTE)
    await parts.view.refresh()
    assert parts.watch.versions() == [("bag", 1), ("mlp", 1), ("mlp", 2)]

    tasks = await queued(parts, 2, 3)
    await parts.watch.poll()
    assert parts.watch.snapshot() == {("bag", 1): NO_QUEUE, ("mlp", 1): NO_QUEUE,
                                      ("mlp", 2): QueueStats(messages=3, consumers=0)}
    assert parts.sample("inferno_queue_messages", labels(2)) == 3
    assert parts.sample("inferno_queue_consumers", labels(2)) == 0
    assert parts.sample("inferno_queue_messages", labels(1)) == 0
    # In process there is no dead-letter queue: the gauge says nothing.
    assert parts.watch.dead_letters is None
    assert parts.sample("inferno_dead_letter_messages") is None
    for task in tasks:
        task.cancel()


async def test_versions_that_leave_the_view_leave_the_metrics(parts: Parts) -> None:
    await parts.store.init_model("mlp", 2)
    await parts.store.set_desired("mlp", 1, loaded=True)
    await parts.view.refresh()
    await parts.watch.poll()
    assert parts.sample("inferno_queue_messages", labels(1)) == 0

    await parts.store.set_desired("mlp", 1, loaded=False)
    await parts.view.refresh()
    await parts.watch.poll()
    assert parts.sample("inferno_queue_messages", labels(1)) is None
    assert parts.sample("inferno_queue_consumers", labels(1)) is None
    assert parts.sample("inferno_queue_messages", labels(2)) == 0
    assert set(parts.watch.snapshot()) == {("mlp", 2)}


async def test_an_unreachable_broker_clears_the_reading_until_it_answers(parts: Parts) -> None:
    await parts.store.init_model("mlp", 2)
    await parts.view.refresh()
    tasks = await queued(parts, 2, 2)
    await parts.watch.poll()
    assert parts.sample("inferno_queue_messages", labels(2)) == 2

    parts.broker.down = True
    await parts.watch.poll()  # does not raise: logged, and nothing stale is exported
    assert parts.watch.snapshot() == {}
    assert parts.sample("inferno_queue_messages", labels(2)) is None

    parts.broker.down = False
    await parts.watch.poll()
    assert parts.watch.snapshot() == {("mlp", 2): QueueStats(2, 0)}
    assert parts.sample("inferno_queue_messages", labels(2)) == 2
    for task in tasks:
        task.cancel()


async def test_the_loop_reads_on_its_own_and_a_bug_restarts_it(parts: Parts) -> None:
    await parts.store.init_model("mlp", 2)
    await parts.view.refresh()
    tasks = await queued(parts, 2, 1)
    downs: list[tuple[str, str | None]] = []
    parts.view.supervisor.add_listener(lambda loop, why: downs.append((loop, why)))
    parts.broker.bug = RuntimeError("a bug in the reading")
    await parts.watch.start()
    await parts.broker.wait_asked(2)  # failed, and was restarted by the supervisor
    assert ("queue stats", "RuntimeError: a bug in the reading") in downs

    parts.broker.bug = None
    asked = parts.broker.asked
    # One version: the pass that asks once more runs to its sleep before this test resumes.
    await parts.broker.wait_asked(asked + 1)
    assert parts.watch.snapshot() == {("mlp", 2): QueueStats(1, 0)}
    assert "queue stats" not in parts.view.supervisor.down()
    for task in tasks:
        task.cancel()
