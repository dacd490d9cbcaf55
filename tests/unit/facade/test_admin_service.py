"""Admin operations: they write the desired state, then wait for live workers to report it.

A real worker (``Reconciler``) serves ``versioned_repo`` (conftest.py: sum versions 1 and 2, and
flaky, which fails to load) over the in-memory broker and state store, as in ``inferno serve``;
the admin service waits on a real ``ClusterView`` of that store. ``RecordingStore`` notes, at the
store seam, each write the admin makes and whether a live worker served the version when it was
made active.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from common.errors import AdminTimeout, ModelFailed, ModelNotFound, ModelNotLoaded
from common.metrics import FacadeMetrics, WorkerMetrics
from common.model.config import Device
from common.model.repository import ModelRepository
from common.settings import WorkerSettings
from common.state.memory import InMemoryStateStore
from common.state.store import ModelState
from common.transport.memory import InMemoryBroker
from facade.admin_service import AdminService
from facade.cluster_view import ClusterView
from tests.unit.conftest import FLAKY_ERROR, sum_request
from worker.reconciler import Reconciler


class RecordingStore(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str, int, bool]] = []
        """(call, model, version, a live worker served that version when the call was made)."""

    async def _served(self, name: str, version: int) -> bool:
        return any(w.serves(name, version) for w in await self.workers())

    async def set_active(self, name: str, version: int) -> ModelState:
        self.writes.append(("set_active", name, version, await self._served(name, version)))
        return await super().set_active(name, version)

    async def set_desired(self, name: str, version: int, loaded: bool,
                          override: str | None = None) -> ModelState:
        call = "load" if loaded else "unload"
        self.writes.append((call, name, version, await self._served(name, version)))
        return await super().set_desired(name, version, loaded, override)


@dataclass
class Cluster:
    admin: AdminService
    view: ClusterView
    store: RecordingStore
    broker: InMemoryBroker


MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(versioned_repo: Path) -> AsyncIterator[MakeCluster]:
    """``await make_cluster(timeout_s=..., models=[...])``: a worker serving ``models`` (none:
    no worker at all), a view and the admin service waiting at most ``timeout_s``."""
    closers: list[Callable[[], Awaitable[None]]] = []

    async def make(timeout_s: float = 30, models: list[str] | None = None) -> Cluster:
        repository = ModelRepository(versioned_repo)
        repository.scan()
        store, broker = RecordingStore(), InMemoryBroker()
        await store.start()
        await broker.start()
        closers.extend([store.aclose, broker.aclose])
        if models is None or models:
            worker = Reconciler(
                WorkerSettings(preload=[], models=models or ["*"], device=Device.CPU,
                               drain_timeout_s=5),
                broker, store, repository, WorkerMetrics(CollectorRegistry()))
            await worker.start()
            closers.append(worker.stop)
        view = ClusterView(store, repository, FacadeMetrics(CollectorRegistry()),
                           refresh_interval_s=60, grace_s=60)
        await view.start()
        closers.append(view.aclose)
        return Cluster(AdminService(store, view, timeout_s), view, store, broker)

    yield make
    for close in reversed(closers):
        await close()


async def total(broker: InMemoryBroker, version: int, value: float) -> float:
    reply = await broker.request(sum_request("sum", version, [[value, 1]]))
    return float(reply.result()["total"][0])


async def test_load_returns_once_a_worker_serves_it_and_the_first_becomes_active(
        make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    described = await cluster.admin.load("sum", None)  # the newest
    assert described == {"name": "sum", "active": 2, "loaded": [2]}
    assert cluster.view.serving("sum", 2) == 1  # reported before load returned
    assert cluster.view.route("sum", None).config.version == 2
    assert await total(cluster.broker, 2, 3) == 4
    # A second version loads beside it; the active one stays.
    assert await cluster.admin.load("sum", 1) == {"name": "sum", "active": 2, "loaded": [1, 2]}
    assert cluster.view.serving("sum", 1) == 1
    assert cluster.store.writes == [("load", "sum", 2, False), ("set_active", "sum", 2, True),
                                    ("load", "sum", 1, False)]


async def test_a_failed_load_is_rolled_back_and_names_the_reason(
        make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    with pytest.raises(ModelFailed) as failed:
        await cluster.admin.load("flaky", 1)
    assert failed.value.message == f"Model 'flaky' version 1 failed to load: {FLAKY_ERROR}"
    assert (await cluster.store.models())["flaky"] == ModelState("flaky", None, frozenset())
    assert cluster.view.models["flaky"].desired == frozenset()  # the caller's next read
    assert await cluster.admin.describe("flaky") == {"name": "flaky", "active": None,
                                                     "loaded": []}


async def test_a_load_no_worker_reports_times_out(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(timeout_s=0.2, models=[])  # no worker at all
    started = time.monotonic()
    with pytest.raises(AdminTimeout, match="No live worker reported model 'sum' version 1"):
        await cluster.admin.load("sum", 1)
    assert time.monotonic() - started < 5
    assert (await cluster.store.models())["sum"].desired == {1}  # left for a worker to come


async def test_a_load_of_an_unknown_version_writes_nothing(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    with pytest.raises(ModelNotFound, match="no version 9"):
        await cluster.admin.load("sum", 9)
    with pytest.raises(ModelNotFound):
        await cluster.admin.activate("nope", 1)
    assert cluster.store.writes == []


async def test_unloading_a_version_not_loaded_is_model_not_loaded(
        make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    with pytest.raises(ModelNotLoaded, match=r"version 1 is not loaded \(loaded: none\)"):
        await cluster.admin.unload("sum", 1)
    await cluster.admin.load("sum", 1)
    with pytest.raises(ModelNotLoaded, match=r"version 2 is not loaded \(loaded: 1\)"):
        await cluster.admin.unload("sum", 2)
    assert [w for w in cluster.store.writes if w[0] == "unload"] == []


async def test_unload_returns_once_no_worker_serves_any_version(
        make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    await cluster.admin.load("sum", 1)
    await cluster.admin.load("sum", 2)
    assert await cluster.admin.unload("sum", None) == {"name": "sum", "active": None,
                                                       "loaded": []}
    assert cluster.view.serving("sum", 1) == cluster.view.serving("sum", 2) == 0
    with pytest.raises(ModelNotLoaded):
        await total(cluster.broker, 1, 0)  # its queue went with it


async def test_activate_loads_first_then_switches(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    await cluster.admin.load("sum", 1)
    assert await cluster.admin.activate("sum", 2) == {"name": "sum", "active": 2,
                                                      "loaded": [1, 2]}
    # Version 2 was served before it became active: unpinned requests found it ready.
    assert cluster.store.writes[-2:] == [("load", "sum", 2, False),
                                         ("set_active", "sum", 2, True)]
    assert cluster.view.route("sum", None).config.version == 2
    assert await total(cluster.broker, 1, 1) == 2  # the old version still answers


async def test_activating_a_version_that_fails_to_load_never_makes_it_active(
        make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    with pytest.raises(ModelFailed, match=f"failed to load: {FLAKY_ERROR}"):
        await cluster.admin.activate("flaky", 1)
    assert [w[0] for w in cluster.store.writes] == ["load", "unload"]  # and rolled back
    assert (await cluster.store.models())["flaky"] == ModelState("flaky", None, frozenset())
