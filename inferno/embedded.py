"""Embedded mode: facade and one worker in one process over the in-memory broker and store."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from common.metrics import WorkerMetrics, process_registry, supervisor_for
from common.model.repository import ModelRepository
from common.settings import FacadeSettings, WorkerSettings
from common.state.memory import InMemoryStateStore
from common.transport.memory import InMemoryBroker
from facade.app import Facade
from worker.reconciler import Reconciler

__all__ = ["Embedded"]


@dataclass
class Embedded:
    facade: Facade
    worker: Reconciler
    broker: InMemoryBroker
    store: InMemoryStateStore
    registry: CollectorRegistry

    @classmethod
    async def start(cls, facade_settings: FacadeSettings,
                    worker_settings: WorkerSettings) -> Embedded:
        """Start the worker (models load in the background) and the facade."""
        registry = process_registry()
        repository = ModelRepository(facade_settings.repo_root)
        repository.scan()
        broker, store = InMemoryBroker(), InMemoryStateStore()
        await broker.start()
        await store.start()
        # One supervisor for both sides: the facade's readiness tells of the worker's loops too.
        supervisor = supervisor_for(registry)
        worker = Reconciler(worker_settings, broker, store, repository,
                            WorkerMetrics(registry, facade_settings.metrics_buckets), supervisor)
        await worker.start()
        facade = await Facade.create(facade_settings, broker, store, repository, registry,
                                     supervisor)
        return cls(facade, worker, broker, store, registry)

    async def wait_ready(self, timeout: float) -> bool:
        """True once every active model version has its runner up."""
        view = self.facade.view
        return await view.wait_for(lambda: True if view.ready()[0] else None, timeout) is True

    async def aclose(self) -> None:
        await self.facade.aclose()
        await self.worker.stop()
        await self.store.aclose()
        await self.broker.aclose()
