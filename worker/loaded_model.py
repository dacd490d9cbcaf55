"""A loaded model version in a worker: runtime + executor thread(s) + batcher + queue consumer."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from common.metrics import WorkerMetrics
from common.model.repository import ModelEntry
from common.settings import WorkerSettings
from common.transport.broker import Broker, Subscription
from worker.batcher import Batcher
from worker.runtime import Runtime, create_runtime
from worker.statistics import WorkerStatistics

__all__ = ["LoadedModel"]

log = logging.getLogger(__name__)


class LoadedModel:
    def __init__(self, entry: ModelEntry, runtime: Runtime, executor: ThreadPoolExecutor,
                 batcher: Batcher) -> None:
        self.entry = entry
        self.runtime = runtime
        self._executor = executor
        self._batcher = batcher
        self._subscription: Subscription | None = None

    @property
    def name(self) -> str:
        return self.entry.config.name

    @property
    def version(self) -> int:
        return self.entry.config.version

    @classmethod
    async def load(cls, entry: ModelEntry, broker: Broker, settings: WorkerSettings,
                   metrics: WorkerMetrics, statistics: WorkerStatistics) -> LoadedModel:
        """Load and warm up the model on its own thread, then start consuming its queue
        (its batches counted in the worker's ``statistics``)."""
        config = entry.config
        runtime = create_runtime(config, entry.directory, settings.device)
        executor = ThreadPoolExecutor(config.concurrency.max_concurrency,
                                      thread_name_prefix=f"inferno-{config.name}-v{config.version}")
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, _load, runtime)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        log.info("loaded %s version %d on %s in %.2fs", config.name, config.version,
                 runtime.device, time.perf_counter() - started)
        batcher = Batcher(config, runtime, executor, metrics,
                          statistics.counters(config.name, config.version))
        runner = cls(entry, runtime, executor, batcher)
        runner._batcher.start()
        try:
            await broker.declare_queue(config.name, config.version, config.queue.max_length)
            # Enough prefetch that a full batch can wait while max_concurrency others run.
            prefetch = config.batching.max_batch_size * config.concurrency.max_concurrency * 2
            runner._subscription = await broker.consume(config, runner._batcher.submit, prefetch)
        except BaseException:
            await runner.stop(drain_timeout=0)  # release the model and its threads
            raise
        metrics.model_loaded.labels(config.name, str(config.version)).set(1)
        return runner

    async def wait_idle(self) -> None:
        """Until every request delivered so far has been answered and acknowledged."""
        await self._batcher.wait_idle()

    async def stop(self, drain_timeout: float) -> None:
        """Stop consuming, finish what was delivered (bounded), release the model."""
        if self._subscription is not None:
            await self._subscription.cancel()
        await self._batcher.drain(drain_timeout)
        if self._subscription is not None:
            await self._subscription.close()  # its channel: one per load, or they add up
        await asyncio.get_running_loop().run_in_executor(self._executor, self.runtime.unload)
        self._executor.shutdown(wait=False)


def _load(runtime: Runtime) -> None:
    runtime.load()
    if runtime.config.warmup:
        runtime.warm_up()
