"""docs/architecture.md names the modules a distributed v1 predict enters, in order, facade and
worker side: a profiler on every thread follows a real one over RabbitMQ (tests/predict_path.py)
and must find exactly those. Facade and worker run in this one process, each with a broker and a
store of its own, as two processes would."""

from __future__ import annotations

from pathlib import Path

from common.metrics import WorkerMetrics, process_registry, supervisor_for
from common.model.repository import ModelRepository
from common.settings import FacadeSettings, WorkerSettings
from common.state.redis_store import RedisStateStore
from common.transport.amqp.broker import AmqpBroker
from facade.app import Facade
from tests.predict_path import PathTrace, documented, record_predict
from tests.services import RedisSpace
from worker.reconciler import Reconciler

MODELS = Path(__file__).resolve().parents[2] / "models"


async def test_a_distributed_v1_predict_enters_the_documented_modules_in_order(
        broker_url: str, redis_space: RedisSpace) -> None:
    # No background loop may run while the predict is recorded: every interval far apart.
    common = {"repo_root": MODELS, "broker_url": broker_url, "redis_url": redis_space.url,
              "redis_prefix": redis_space.prefix, "heartbeat_interval_s": 600,
              "gc_freeze": False}
    facade_settings = FacadeSettings(**common, queue_stats_interval_s=600)
    # statistics_interval_s=0: no early heartbeat reports the predict's statistics.
    worker_settings = WorkerSettings(**common, preload=["bag"], device="cpu",
                                     state_reconcile_interval_s=600, statistics_interval_s=0)
    trace = PathTrace()
    with trace.installed():
        registry = process_registry()
        repository = ModelRepository(MODELS)
        repository.scan()
        supervisor = supervisor_for(registry)
        brokers = [AmqpBroker(broker_url), AmqpBroker(broker_url)]
        stores = [RedisStateStore(redis_space.url, redis_space.prefix) for _ in brokers]
        for broker, store in zip(brokers, stores, strict=True):
            await broker.start()
            await store.start()
        worker = Reconciler(worker_settings, brokers[0], stores[0], repository,
                            WorkerMetrics(registry, worker_settings.metrics_buckets), supervisor)
        await worker.start()
        facade = await Facade.create(facade_settings, brokers[1], stores[1], repository,
                                     registry, supervisor)
        try:
            view = facade.view
            assert await view.wait_for(lambda: True if view.ready()[0] else None, 30)
            await record_predict(facade.app, trace)
        finally:
            await facade.aclose()
            await worker.stop()
            for broker, store in zip(brokers, stores, strict=True):
                await store.aclose()
                await broker.aclose()
    assert trace.modules() == documented("distributed")
