"""The facade's cached view of the cluster: why a predict call cannot be routed, readiness, and
how the cache follows the store (its events, its outages).

The view reads a real ``InMemoryStateStore`` (``FlakyStore`` adds, at that seam, the failures of
an unreachable Redis) and the sample repository (models/: mlp versions 1 and 2, bag). Workers are
heartbeats written to the store, as real workers write them. The periodic refresh is set to a
minute unless a test needs it, so whatever the view learns sooner it learned from an event.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from common.errors import ModelNotFound, ModelNotLoaded, StateUnavailable, Unavailable
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.state.memory import InMemoryStateStore
from common.state.store import ModelState, WorkerInfo
from facade.cluster_view import ClusterView
from tests.unit.conftest import SAMPLE_MODELS

MINUTE = 60.0


class FlakyStore(InMemoryStateStore):
    """The in-memory store that can be unreachable (every read refused, as Redis is then), and
    whose heartbeats can expire while it is (Redis expires keys without an event)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0
        """Reads refused so far."""
        self.answered = 0
        """Worker listings answered so far (one per successful refresh of a view)."""
        self._refusal = asyncio.Event()

    async def models(self) -> dict[str, ModelState]:
        self._refuse_if_down()
        return await super().models()

    async def workers(self) -> list[WorkerInfo]:
        self._refuse_if_down()
        self.answered += 1
        return await super().workers()

    def _refuse_if_down(self) -> None:
        if self.down:
            self.refused += 1
            self._refusal.set()
            raise StateUnavailable("Redis is unreachable")

    async def wait_refused(self) -> None:
        """Until a read has been refused."""
        async with asyncio.timeout(5):
            while not self.refused:
                self._refusal.clear()
                await self._refusal.wait()

    def expire_heartbeats(self) -> None:
        self._workers.clear()


@pytest.fixture
async def store() -> AsyncIterator[FlakyStore]:
    store = FlakyStore()
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture
def repository() -> ModelRepository:
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    return repository


MakeView = Callable[..., Awaitable[ClusterView]]


@pytest.fixture
async def make_view(store: FlakyStore, repository: ModelRepository
                    ) -> AsyncIterator[MakeView]:
    """``await make_view(refresh_interval_s=..., grace_s=...)``: a started view, closed after."""
    made: list[ClusterView] = []

    async def make(refresh_interval_s: float = MINUTE, grace_s: float = MINUTE) -> ClusterView:
        view = ClusterView(store, repository, FacadeMetrics(CollectorRegistry()),
                           refresh_interval_s, grace_s)
        made.append(view)
        await view.start()
        return view

    yield make
    for view in made:
        await view.aclose()


def heartbeat(worker_id: str, **loaded: tuple[int, ...]) -> WorkerInfo:
    return WorkerInfo(worker_id=worker_id, host="test", device="cpu", loaded=dict(loaded))


async def beat(store: InMemoryStateStore, info: WorkerInfo) -> None:
    await store.put_worker(info, ttl_s=MINUTE)


async def changed(view: ClusterView, check: Callable[[], bool], timeout: float = 5) -> None:
    """Until the view satisfies ``check``, re-checked on each of its refreshes (an outer timeout:
    wait_for's own, longer one, would return what ``check`` says after it)."""
    async with asyncio.timeout(timeout):
        assert await view.wait_for(lambda: True if check() else None, MINUTE)


# --- route --------------------------------------------------------------------------------------


async def test_an_unknown_model_or_version_is_not_found(make_view: MakeView,
                                                        store: FlakyStore) -> None:
    await store.set_active("mlp", 2)
    view = await make_view()
    with pytest.raises(ModelNotFound) as unknown:
        view.route("nope", None)
    assert type(unknown.value) is ModelNotFound and "'nope' not found" in unknown.value.message
    with pytest.raises(ModelNotFound) as version:
        view.route("mlp", 7)
    assert type(version.value) is ModelNotFound and "no version 7" in version.value.message


async def test_a_known_model_without_state_is_not_loaded(make_view: MakeView) -> None:
    view = await make_view()
    with pytest.raises(ModelNotLoaded, match="'bag' is not loaded"):
        view.route("bag", None)


async def test_a_version_not_desired_is_not_loaded_and_names_the_loaded_ones(
        make_view: MakeView, store: FlakyStore) -> None:
    await store.set_active("mlp", 2)
    view = await make_view()
    with pytest.raises(ModelNotLoaded, match=r"version 1 is not loaded \(loaded: 2\)"):
        view.route("mlp", 1)


async def test_no_active_version_asks_for_a_pin(make_view: MakeView,
                                                store: FlakyStore) -> None:
    await store.set_desired("mlp", 1, loaded=True)
    await store.set_desired("mlp", 2, loaded=True)
    await beat(store, heartbeat("w1", mlp=(1, 2)))
    view = await make_view()
    with pytest.raises(ModelNotLoaded, match=r"no active version; pin one of \[1, 2\]"):
        view.route("mlp", None)
    assert view.route("mlp", 1).config.version == 1  # pinned: served


async def test_no_live_worker_is_unavailable_then_a_heartbeat_routes(
        make_view: MakeView, store: FlakyStore) -> None:
    await store.set_active("mlp", 2)
    view = await make_view()
    with pytest.raises(Unavailable, match="No live worker serves model 'mlp' version 2"):
        view.route("mlp", None)
    await beat(store, heartbeat("w1", mlp=(2,)))
    await changed(view, lambda: view.serving("mlp", 2) == 1)
    assert view.route("mlp", None).config.version == 2
    assert view.route("mlp", 2).config.version == 2


# --- ready ----------------------------------------------------------------------------------------


async def test_ready_names_the_active_versions_no_worker_serves(
        make_view: MakeView, store: FlakyStore) -> None:
    await store.set_active("mlp", 2)
    await store.set_active("bag", 1)
    await store.set_desired("mlp", 1, loaded=True)  # loaded, not active: does not count
    view = await make_view()
    assert view.ready() == (False, ["mlp:2", "bag:1"])
    await beat(store, heartbeat("w1", mlp=(2,)))
    await changed(view, lambda: view.serving("mlp", 2) == 1)
    assert view.ready() == (False, ["bag:1"])
    await beat(store, heartbeat("w2", bag=(1,)))
    await changed(view, lambda: view.ready()[0])
    assert view.ready() == (True, [])


async def test_without_active_versions_the_view_is_ready(make_view: MakeView,
                                                         store: FlakyStore) -> None:
    await store.set_desired("mlp", 1, loaded=True)
    view = await make_view()
    assert view.ready() == (True, [])


# --- following the store --------------------------------------------------------------------------


async def test_events_refresh_the_view_without_waiting_for_the_timer(
        make_view: MakeView, store: FlakyStore) -> None:
    await store.set_active("mlp", 2)
    await beat(store, heartbeat("w1", mlp=(2,)))
    view = await make_view()
    assert view.serving("mlp", 2) == 1
    await store.set_active("mlp", 1)
    await changed(view, lambda: view.models["mlp"].active == 1)
    await store.remove_worker("w1")  # a worker that stopped says so
    await changed(view, lambda: view.workers == [])
    with pytest.raises(Unavailable):
        view.route("mlp", 2)


async def test_wait_for_wakes_on_a_change_and_times_out_without_one(
        make_view: MakeView, store: FlakyStore) -> None:
    await store.set_active("mlp", 2)
    view = await make_view()
    looked = asyncio.Event()

    def serving() -> int | None:
        looked.set()
        return view.serving("mlp", 2) or None

    waiter = asyncio.create_task(view.wait_for(serving, timeout=MINUTE))
    await asyncio.wait_for(looked.wait(), 5)
    assert not waiter.done()  # it found nothing: it waits
    await beat(store, heartbeat("w1", mlp=(2,)))
    async with asyncio.timeout(5):  # a minute's timer would not have woken it
        assert await waiter == 1
    # Nothing changes: the timeout ends the wait, with what check() says then.
    assert await view.wait_for(lambda: view.serving("mlp", 1) or None, timeout=0.05) is None


@pytest.mark.parametrize(("grace_s", "kept"), [(MINUTE, 1), (0.0, 0)])
async def test_workers_are_kept_for_the_grace_period_after_a_store_outage(
        make_view: MakeView, store: FlakyStore, grace_s: float, kept: int) -> None:
    await store.set_active("mlp", 2)
    await beat(store, heartbeat("w1", mlp=(2,)))
    view = await make_view(refresh_interval_s=0.02, grace_s=grace_s)
    assert view.route("mlp", None).config.version == 2

    store.down = True
    await store.wait_refused()
    assert view.route("mlp", None).config.version == 2  # served from the last known state
    store.expire_heartbeats()  # the outage outlived the heartbeats' TTL
    store.down = False
    answered = store.answered
    await changed(view, lambda: store.answered > answered)  # the first refresh after it

    assert view.serving("mlp", 2) == kept
    if kept:
        assert view.route("mlp", None).config.version == 2
        await beat(store, heartbeat("w1", mlp=(2,)))  # it beats again: counted once
        await changed(view, lambda: store.answered > answered + 1)
        assert view.serving("mlp", 2) == 1
    else:
        with pytest.raises(Unavailable):
            view.route("mlp", None)


# --- versions from the state store ----------------------------------------------------------------


async def test_a_desired_version_made_elsewhere_is_written_from_the_store_and_a_bad_one_skipped(
        store: FlakyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copytree(SAMPLE_MODELS / "mlp" / "2", tmp_path / "mlp" / "2")
    repository = ModelRepository(tmp_path)
    repository.scan()
    yaml_2 = (tmp_path / "mlp" / "2" / "model.yaml").read_text()
    weights = (tmp_path / "mlp" / "2" / "model.pt").read_bytes()
    await store.put_version_files("mlp", 3, {
        "model.yaml": yaml_2.replace("version: 2", "version: 3").encode(), "model.pt": weights})
    # Its model.yaml names another version: refused, as a scan refuses it.
    await store.put_version_files("mlp", 4, {"model.yaml": yaml_2.encode(),
                                             "model.pt": weights})
    for version in (3, 4):
        await store.set_desired("mlp", version, loaded=True)
    view = ClusterView(store, repository, FacadeMetrics(CollectorRegistry()), MINUTE, MINUTE)
    await view.start()
    try:
        assert sorted(repository.versions("mlp")) == [2, 3]
        assert (tmp_path / "mlp" / "3" / "model.pt").read_bytes() == weights
        assert not (tmp_path / "mlp" / "4").exists()
        # The view goes on refreshing, and says so once.
        await view.refresh()
        assert view.models["mlp"].desired == {3, 4}
        assert [r.message for r in caplog.records if "mlp version 4" in r.message] == [
            "cannot write mlp version 4 from the state store: InvalidInput: mlp/4/model.yaml "
            "(field 'version'): model.yaml says mlp/2 but lives in mlp/4"]
        # Unloaded, then loaded again with files that are right: written this time.
        await store.set_desired("mlp", 4, loaded=False)
        await view.refresh()
        await store.put_version_files("mlp", 4, {
            "model.yaml": yaml_2.replace("version: 2", "version: 4").encode(),
            "model.pt": weights})
        await store.set_desired("mlp", 4, loaded=True)
        await view.refresh()
        assert sorted(repository.versions("mlp")) == [2, 3, 4]
    finally:
        await view.aclose()
