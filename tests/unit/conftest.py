"""Fixtures of the unit tests: the test model repositories and a batcher harness.

``versioned_repo`` is a repository in tmp_path for what a worker loads and unloads: ``sum``
versions 1 and 2, and ``flaky``, the sum model whose model.py fails until ``fix_flaky`` fixes it.

The harness wires a real ``Batcher`` to a real runtime (``create_runtime`` over a model of
``tests/models``) and a real ``InMemoryBroker``. Two spies sit at the seams, never inside the
batcher: ``Probe`` between batcher and runtime (records every batch the model runs, can hold batches
at a gate, measures concurrency) and a counting consumer callback between broker and batcher (so a
test can await "the batcher has been handed N deliveries" instead of sleeping).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from common.metrics import WorkerMetrics
from common.model.config import Device, ModelConfig
from common.model.repository import ModelRepository
from common.transport.broker import Delivery, Subscription
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictReply, PredictRequest
from worker.batcher import Batcher
from worker.runtime import Parts, Runtime, create_runtime
from worker.statistics import VersionCounters

TEST_MODELS = Path(__file__).resolve().parents[1] / "models"
SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "models"

Array = npt.NDArray[Any]
_ids = itertools.count()


class Probe:
    """A spy between the batcher and a real runtime: what the model saw, when, how many at once."""

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.calls: list[dict[str, Array]] = []
        """Inputs of every batch, in the order the model was called."""
        self.requests: list[int] = []
        """Requests of every batch: the arrays per input the runtime was handed, unconcatenated."""
        self.spans: list[tuple[float, float]] = []
        """(monotonic start, monotonic end) of every finished batch, in the order they ended."""
        self.gate = threading.Event()
        """Cleared: batches wait (holding their runner slot) until it is set again."""
        self.gate.set()
        self.started: asyncio.Queue[int] = asyncio.Queue()
        """Rows of each batch, put when the model is called (await it instead of sleeping)."""
        self.entered: queue.SimpleQueue[int] = queue.SimpleQueue()
        """The same, put from the model's thread: what a test blocking the event loop reads."""
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._loop = loop

    @property
    def batch_sizes(self) -> list[int]:
        return [next(iter(call.values())).shape[0] for call in self.calls]

    def predict_parts(self, parts: Parts) -> dict[str, Array]:
        start = time.monotonic()
        rows = sum(a.shape[0] for a in next(iter(parts.values())))
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append({name: np.concatenate(p) for name, p in parts.items()})
            self.requests.append(len(next(iter(parts.values()))))
        self.entered.put(rows)
        self._loop.call_soon_threadsafe(self.started.put_nowait, rows)
        try:
            if not self.gate.wait(10):
                raise TimeoutError("the probe's gate was never opened")
            return self.runtime.predict_parts(parts)
        finally:
            with self._lock:
                self.active -= 1
                self.spans.append((start, time.monotonic()))


class Executor(ThreadPoolExecutor):
    """The version's threads, counting the batches handed to them (from the event loop)."""

    def __init__(self, threads: int, name: str) -> None:
        super().__init__(threads, thread_name_prefix=name)
        self.handed = 0
        self._handed = asyncio.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.handed += 1
        self._handed.set()
        return super().submit(fn, *args, **kwargs)

    async def wait_handed(self, total: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.handed < total:
                self._handed.clear()
                await self._handed.wait()


@dataclass
class Harness:
    config: ModelConfig
    probe: Probe
    batcher: Batcher
    broker: InMemoryBroker
    registry: CollectorRegistry
    executor: Executor
    subscription: Subscription | None = None
    delivered: int = 0
    """Deliveries handed to ``batcher.submit`` so far."""
    request_ids: list[str] = field(default_factory=list)
    """The request id of each of those deliveries, in order."""
    statistics: VersionCounters = field(default_factory=VersionCounters)
    """What the batcher counts of Triton's statistics."""
    _delivery: asyncio.Event = field(default_factory=asyncio.Event)

    def handle(self, delivery: Delivery) -> None:
        self.delivered += 1
        self.request_ids.append(delivery.request.request_id)
        self._delivery.set()
        self.batcher.submit(delivery)

    async def wait_delivered(self, total: int, timeout: float = 5.0) -> None:
        """Until the batcher has been handed ``total`` deliveries in all."""
        async with asyncio.timeout(timeout):
            while self.delivered < total:
                self._delivery.clear()
                await self._delivery.wait()

    async def request(self, inputs: Mapping[str, Any], *, timeout: float = 5.0,
                      outputs: list[str] | None = None, published: float = 0.0
                      ) -> PredictReply:
        """One predict call through the broker, validated as the facade validates it."""
        arrays = {n: a if isinstance(a, np.ndarray) else np.asarray(a, np.float32)
                  for n, a in inputs.items()}
        config = self.config
        checked = config.signature.validate_request(
            arrays, outputs, max_rows=config.batching.max_batch_size, model=config.name)
        request = PredictRequest(
            model=config.name, version=config.version, inputs=arrays, checked=checked,
            deadline=time.time() + timeout, request_id=f"t{next(_ids)}", published=published)
        return await self.broker.request(request)

    async def infer(self, inputs: Mapping[str, Any], **kwargs: Any) -> dict[str, Array]:
        return (await self.request(inputs, **kwargs)).result()

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"model": self.config.name, **labels})
        return 0.0 if value is None else value


MakeBatcher = Callable[..., Awaitable[Harness]]
FLAKY_ERROR = "RuntimeError: no weights yet"
"""Why ``flaky`` fails to load, as a worker reports it."""


@pytest.fixture
def versioned_repo(tmp_path: Path) -> Path:
    for name, version in (("sum", 1), ("sum", 2), ("flaky", 1)):
        target = tmp_path / name / str(version)
        shutil.copytree(TEST_MODELS / "sum" / "1", target,
                        ignore=shutil.ignore_patterns("__pycache__"))
        config = yaml.safe_load((target / "model.yaml").read_text())
        config.update(name=name, version=version)
        (target / "model.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "flaky" / "1" / "model.py").write_text('raise RuntimeError("no weights yet")\n')
    return tmp_path


def sum_request(model: str, version: int, x: Any, request_id: str = "",
                timeout: float = 10.0) -> PredictRequest:
    """A request for a copy of the test model ``sum`` (``x``: float32 [batch, n]), validated as
    the facade validates it."""
    arrays = {"x": np.asarray(x, np.float32)}
    signature = _sum_config().signature
    checked = signature.validate_request(arrays, None, max_rows=64, model=model)
    return PredictRequest(model=model, version=version, inputs=arrays, checked=checked,
                          deadline=time.time() + timeout, request_id=request_id)


@functools.cache
def _sum_config() -> ModelConfig:
    return ModelConfig.model_validate(
        yaml.safe_load((TEST_MODELS / "sum" / "1" / "model.yaml").read_text()))


def fix_flaky(repo: Path) -> None:
    shutil.copy(TEST_MODELS / "sum" / "1" / "model.py", repo / "flaky" / "1" / "model.py")


@pytest.fixture
def test_repository() -> ModelRepository:
    repository = ModelRepository(TEST_MODELS)
    repository.scan()
    return repository


@pytest.fixture
async def make_batcher(test_repository: ModelRepository) -> AsyncIterator[MakeBatcher]:
    """``await make_batcher("sum", max_batch_size=4, wait="fill", max_concurrency=2)``: a started
    batcher over a tests/models model, consuming its queue on an in-memory broker."""
    made: list[Harness] = []

    async def make(model: str, *, max_concurrency: int | None = None, prefetch: int = 512,
                   threads: int = 8, **batching: Any) -> Harness:
        entry = test_repository.get(model)
        raw = entry.config.model_dump(mode="json")
        raw["batching"].update(batching)
        if max_concurrency is not None:
            raw["concurrency"] = {"max_concurrency": max_concurrency}
        config = ModelConfig.model_validate(raw)
        runtime = create_runtime(config, entry.directory, Device.CPU)
        runtime.load()
        probe = Probe(runtime, asyncio.get_running_loop())
        registry = CollectorRegistry()
        executor = Executor(threads, f"test-{model}")
        broker = InMemoryBroker()
        await broker.start()
        counters = VersionCounters()
        batcher = Batcher(config, probe, executor, WorkerMetrics(registry),  # type: ignore[arg-type]
                          counters)
        harness = Harness(config, probe, batcher, broker, registry, executor,
                          statistics=counters)
        made.append(harness)
        batcher.start()
        await broker.declare_queue(config.name, config.version, config.queue.max_length)
        harness.subscription = await broker.consume(config, harness.handle, prefetch)
        return harness

    yield make
    for harness in made:
        harness.probe.gate.set()
        if harness.subscription is not None:
            await harness.subscription.cancel()
        await harness.batcher.drain(5)
        harness.executor.shutdown(wait=True)
        await harness.broker.aclose()
