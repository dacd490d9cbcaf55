"""The ``StateStore`` contract (common/state/store.py), run against every implementation
(conftest.py).

Events: a store may subscribe when ``events()`` is called (in memory) or asynchronously, on the
first iteration (Redis), announcing it with ``RESYNC``. Tests that count events start from
``subscribe()``, which returns once the subscription is live either way, without a timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from common.state.statistics import BatchSizeStatistics, StatisticsReport, VersionStatistics
from common.state.store import RESYNC, EventKind, ModelState, StateEvent, StateStore, WorkerInfo

PROBE = "probe-"
"""Worker ids of ``subscribe()``'s probe heartbeats, which ``next_event`` skips."""


def worker(worker_id: str, **loaded: tuple[int, ...]) -> WorkerInfo:
    return WorkerInfo(worker_id=worker_id, host="host-a", device="cpu", loaded=dict(loaded),
                      capacity=2, started_at=1700000000.5)


async def next_event(events: AsyncIterator[StateEvent], skip_resync: bool = True) -> StateEvent:
    """The next event; a store that subscribes asynchronously announces itself with RESYNC."""
    while True:
        event = await asyncio.wait_for(anext(events), 2)
        if event.name.startswith(PROBE):
            continue
        if not (skip_resync and event == RESYNC):
            return event


async def subscribe(store: StateStore) -> AsyncIterator[StateEvent]:
    """``store.events()``, returned once every later change is sure to be seen.

    A probe heartbeat is published before the first iteration. A store subscribed at the call
    delivers it; one that subscribes on the first iteration has lost it (nobody listened yet)
    and sends RESYNC instead. Either way the first event says the subscription is live.
    """
    events = store.events()
    await store.put_worker(worker(f"{PROBE}{uuid.uuid4().hex[:8]}"), ttl_s=0.001)
    first = await asyncio.wait_for(anext(events), 2)
    assert first == RESYNC or first.name.startswith(PROBE), first
    return events


async def close(events: AsyncIterator[StateEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


# --- models ------------------------------------------------------------------------------------


async def test_init_model_only_when_absent(store: StateStore, model: str) -> None:
    assert await store.init_model(model, 2) == ModelState(model, 2, frozenset({2}))
    # Already known: nothing changes, whatever version a newer worker would pick.
    assert await store.init_model(model, 3) == ModelState(model, 2, frozenset({2}))
    assert (await store.models())[model] == ModelState(model, 2, frozenset({2}))


async def test_init_model_keeps_an_unloaded_model_unloaded(store: StateStore, model: str) -> None:
    # A worker that starts (or restarts) must not load again what an admin unloaded.
    await store.init_model(model, 1)
    await store.set_desired(model, 1, loaded=False)
    assert await store.init_model(model, 1) == ModelState(model, None, frozenset())


async def test_set_active_adds_to_desired(store: StateStore, model: str) -> None:
    await store.init_model(model, 1)
    state = await store.set_active(model, 2)
    assert state == ModelState(model, 2, frozenset({1, 2}))
    assert (await store.models())[model] == state


async def test_set_active_on_an_unknown_model(store: StateStore, model: str) -> None:
    assert await store.set_active(model, 4) == ModelState(model, 4, frozenset({4}))


async def test_set_desired_adds_and_removes(store: StateStore, model: str) -> None:
    await store.init_model(model, 1)
    assert await store.set_desired(model, 2, loaded=True) == ModelState(model, 1,
                                                                        frozenset({1, 2}))
    # Removing an inactive version keeps the active one.
    assert await store.set_desired(model, 2, loaded=False) == ModelState(model, 1, frozenset({1}))


async def test_removing_the_active_version_clears_active(store: StateStore, model: str) -> None:
    await store.set_active(model, 1)
    await store.set_desired(model, 2, loaded=True)
    state = await store.set_desired(model, 1, loaded=False)
    assert state == ModelState(model, None, frozenset({2}))
    assert (await store.models())[model] == state


async def test_set_desired_on_an_unknown_model(store: StateStore, model: str) -> None:
    assert await store.set_desired(model, 3, loaded=True) == ModelState(model, None,
                                                                        frozenset({3}))


async def test_models_is_a_snapshot(store: StateStore, model: str) -> None:
    await store.init_model(model, 1)
    snapshot = await store.models()
    snapshot.pop(model)
    assert model in await store.models()


# --- configuration overrides (a load with Triton's ``config``) ----------------------------------

OVERRIDE = '{"batching":{"max_batch_size":4}}'


async def test_a_load_with_an_override_holds_it(store: StateStore, peer_store: StateStore,
                                               model: str) -> None:
    # A text holding what JSON escapes and Lua's strings do not mind: it comes back unchanged.
    text = '{"batching":{"wait":"fill"},"note":"é \\" \\\\ ;\'"}'
    state = await store.set_desired(model, 2, loaded=True, override=text)
    assert state == ModelState(model, None, frozenset({2}), {2: text})
    assert (await peer_store.models())[model].overrides == {2: text}


async def test_a_load_without_an_override_keeps_it_and_an_empty_one_clears_it(
        store: StateStore, model: str) -> None:
    await store.set_desired(model, 1, loaded=True, override=OVERRIDE)
    await store.set_desired(model, 2, loaded=True, override=OVERRIDE)
    # Activating (a load that says nothing of the configuration) keeps it.
    assert (await store.set_desired(model, 1, loaded=True)).overrides == {1: OVERRIDE,
                                                                          2: OVERRIDE}
    assert (await store.set_active(model, 1)).overrides == {1: OVERRIDE, 2: OVERRIDE}
    # A load from the repository's configuration clears the override of that version only.
    state = await store.set_desired(model, 1, loaded=True, override="")
    assert state == ModelState(model, 1, frozenset({1, 2}), {2: OVERRIDE})
    assert (await store.models())[model] == state


async def test_an_unload_clears_the_override(store: StateStore, model: str) -> None:
    await store.set_desired(model, 1, loaded=True, override=OVERRIDE)
    assert (await store.set_desired(model, 1, loaded=False)).overrides == {}
    # Loaded again without one, the version has none.
    assert await store.set_desired(model, 1, loaded=True) == ModelState(model, None,
                                                                        frozenset({1}))


async def test_an_override_change_is_an_event(store: StateStore, model: str) -> None:
    await store.set_desired(model, 1, loaded=True)
    events = await subscribe(store)
    try:
        await store.set_desired(model, 1, loaded=True, override=OVERRIDE)
        assert await next_event(events) == StateEvent(EventKind.MODEL, model)
    finally:
        await close(events)


# --- workers -----------------------------------------------------------------------------------


async def test_a_versions_files_are_kept_for_the_replicas(
        store: StateStore, peer_store: StateStore, model: str) -> None:
    assert await store.version_files(model, 2) is None
    files = {"model.yaml": b"name: x\n", "weights/w.bin": bytes(range(256)) * 4}
    await store.put_version_files(model, 2, files)
    assert await peer_store.version_files(model, 2) == files
    # Kept per version: another version of the model has none.
    assert await peer_store.version_files(model, 3) is None


async def test_put_worker_and_workers(store: StateStore, model: str) -> None:
    info = worker(f"{model}-w1", **{model: (1, 2)})
    await store.put_worker(info, ttl_s=10)
    [got] = [w for w in await store.workers() if w.worker_id == info.worker_id]
    assert got == info
    assert got.serves(model, 2) and not got.serves(model, 3)


async def test_a_heartbeat_replaces_the_previous_one(store: StateStore, model: str) -> None:
    await store.put_worker(worker(f"{model}-w1"), ttl_s=10)
    await store.put_worker(worker(f"{model}-w1", **{model: (1,)}), ttl_s=10)
    mine = [w for w in await store.workers() if w.worker_id == f"{model}-w1"]
    assert len(mine) == 1 and mine[0].loaded == {model: (1,)}


async def test_a_worker_expires_after_its_ttl(store: StateStore, model: str) -> None:
    live, dying = f"{model}-live", f"{model}-dying"
    await store.put_worker(worker(live), ttl_s=10)
    await store.put_worker(worker(dying), ttl_s=0.05)
    assert {live, dying} <= {w.worker_id for w in await store.workers()}
    # Expiry is time-based and announced by no event: sleeping past the TTL is the test.
    await asyncio.sleep(0.15)
    ids = {w.worker_id for w in await store.workers()}
    assert live in ids and dying not in ids


async def test_a_heartbeat_extends_the_ttl(store: StateStore, model: str) -> None:
    info = worker(f"{model}-w1")
    await store.put_worker(info, ttl_s=0.1)
    await store.put_worker(info, ttl_s=10)
    await asyncio.sleep(0.15)  # past the first TTL (time-based, see above)
    assert info.worker_id in {w.worker_id for w in await store.workers()}


async def test_remove_worker(store: StateStore, model: str) -> None:
    info = worker(f"{model}-w1")
    await store.put_worker(info, ttl_s=10)
    await store.remove_worker(info.worker_id)
    assert info.worker_id not in {w.worker_id for w in await store.workers()}
    await store.remove_worker(info.worker_id)  # unknown: no error


# --- events ------------------------------------------------------------------------------------


async def test_events_are_subscribed_at_call_time(store: StateStore, model: str) -> None:
    events = store.events()
    await store.init_model(model, 1)  # changed before the first iteration
    first = await next_event(events, skip_resync=False)
    # Seen; or, from a store that subscribes asynchronously, covered by the RESYNC it sends once
    # subscribed (the listener re-reads everything).
    assert first in (StateEvent(EventKind.MODEL, model), RESYNC)
    await close(events)


async def test_every_change_is_an_event(store: StateStore, model: str) -> None:
    events = await subscribe(store)
    worker_id = f"{model}-w1"
    await store.init_model(model, 1)
    await store.set_active(model, 2)
    await store.set_desired(model, 1, loaded=False)
    await store.put_worker(worker(worker_id), ttl_s=10)
    await store.remove_worker(worker_id)

    seen = [await next_event(events) for _ in range(5)]

    assert seen == [StateEvent(EventKind.MODEL, model)] * 3 + [
        StateEvent(EventKind.WORKER, worker_id)] * 2
    await close(events)


async def test_a_heartbeat_that_announces_nothing_only_renews_the_lease(store: StateStore,
                                                                      model: str) -> None:
    events = await subscribe(store)
    quiet, loud = f"{model}-quiet", f"{model}-loud"
    await store.put_worker(worker(quiet, **{model: (1,)}), ttl_s=10, announce=False)
    await store.put_worker(worker(loud), ttl_s=10)
    # The first event is the second worker's: the quiet heartbeat published none...
    assert await next_event(events) == StateEvent(EventKind.WORKER, loud)
    # ...but it was stored all the same.
    assert {w.worker_id: w.loaded for w in await store.workers()}[quiet] == {model: (1,)}
    await close(events)


async def test_every_subscriber_gets_every_event(store: StateStore, model: str) -> None:
    first, second = await subscribe(store), await subscribe(store)
    await store.set_active(model, 1)
    assert await next_event(first) == StateEvent(EventKind.MODEL, model)
    assert await next_event(second) == StateEvent(EventKind.MODEL, model)
    await close(first)
    await close(second)


async def test_events_end_when_the_store_closes(store: StateStore, model: str) -> None:
    events = store.events()
    await store.aclose()
    with pytest.raises(StopAsyncIteration):
        await next_event(events)


async def test_a_waiting_listener_ends_when_the_store_closes(store: StateStore,
                                                            model: str) -> None:
    events = await subscribe(store)
    waiting = asyncio.create_task(next_event(events))
    await asyncio.sleep(0)  # let it start waiting
    await store.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 3)


async def test_a_closed_iterator_unsubscribes(store: StateStore, model: str) -> None:
    events = await subscribe(store)
    await close(events)
    # The store still works for others, and the closed listener is left out.
    others = await subscribe(store)
    await store.set_active(model, 1)
    assert await next_event(others) == StateEvent(EventKind.MODEL, model)
    await close(others)


# --- replicas: what one instance writes, another sees --------------------------------------------


async def test_a_replica_sees_every_change(store: StateStore, peer_store: StateStore,
                                           model: str) -> None:
    events = await subscribe(peer_store)
    worker_id = f"{model}-w1"
    await store.set_active(model, 2)
    await store.put_worker(worker(worker_id, **{model: (2,)}), ttl_s=10)

    assert await next_event(events) == StateEvent(EventKind.MODEL, model)
    assert await next_event(events) == StateEvent(EventKind.WORKER, worker_id)
    assert (await peer_store.models())[model] == ModelState(model, 2, frozenset({2}))
    [seen] = [w for w in await peer_store.workers() if w.worker_id == worker_id]
    assert seen.serves(model, 2)
    await close(events)


async def test_concurrent_changes_are_not_lost(store: StateStore, peer_store: StateStore,
                                               model: str) -> None:
    await store.init_model(model, 1)
    # Two replicas add versions at once: each change reads and writes the model's state, so a
    # non-atomic read-modify-write would lose some of them.
    await asyncio.gather(*(
        (store if v % 2 else peer_store).set_desired(model, v, loaded=True)
        for v in range(2, 22)))
    state = (await store.models())[model]
    assert state == ModelState(model, 1, frozenset(range(1, 22)))
    assert (await peer_store.models())[model] == state


async def test_a_change_returns_the_state_it_made(store: StateStore, peer_store: StateStore,
                                                 model: str) -> None:
    await store.set_active(model, 1)
    assert await peer_store.set_desired(model, 2, loaded=True) == ModelState(
        model, 1, frozenset({1, 2}))
    assert await store.set_active(model, 2) == ModelState(model, 2, frozenset({1, 2}))
    assert await peer_store.set_desired(model, 2, loaded=False) == ModelState(
        model, None, frozenset({1}))
    assert (await store.models())[model] == ModelState(model, None, frozenset({1}))


async def test_a_worker_id_with_colons_and_unicode(store: StateStore, model: str) -> None:
    # Worker ids are often host:pid; hosts and error texts may be anything.
    info = WorkerInfo(worker_id=f"{model}:node-1:4242", host="höst-ä", device="cuda:0",
                      loaded={model: (1, 3)}, capacity=4, started_at=1700000000.25,
                      failed={f"{model}:2": (1700000001.5, "RuntimeError: ✗ no GPU")},
                      statistics=report(f"{model}:1"))
    await store.put_worker(info, ttl_s=10)
    [stored] = [w for w in await store.workers() if w.worker_id == info.worker_id]
    assert stored == info
    assert stored.statistics == info.statistics  # not compared by ==: checked on its own
    await store.remove_worker(info.worker_id)
    assert info.worker_id not in {w.worker_id for w in await store.workers()}


# --- WorkerInfo (the heartbeat's payload) --------------------------------------------------------


def report(key: str) -> StatisticsReport:
    """Statistics of one version, as a heartbeat carries them."""
    counted = VersionStatistics(last_inference_ms=1700000000123, inference_count=9,
                                execution_count=3, success_count=5, success_ns=4_000_000,
                                fail_count=1, fail_ns=2_000, queue_ns=3_000, batches={
                                    1: BatchSizeStatistics(1, 10, 20, 30),
                                    4: BatchSizeStatistics(2, 40, 50, 60)})
    return StatisticsReport({key: counted}, taken_at=1700000000.5, interval_s=0.05)


def test_worker_info_round_trips_through_a_dict() -> None:
    info = WorkerInfo(worker_id="w1", host="h", device="cuda:0",
                      loaded={"mlp": (1, 2), "bag": (1,)}, capacity=3, started_at=12.5,
                      failed={"mlp:3": (99.0, "ValueError: nope")},
                      statistics=report("mlp:2"),
                      overrides={"mlp:2": '{"batching":{"max_batch_size":4}}'})
    data = info.to_dict()
    assert data["loaded"] == {"mlp": [1, 2], "bag": [1]}
    # JSON keys are strings: the batch sizes too.
    assert data["statistics"]["versions"]["mlp:2"]["batches"] == {"1": [1, 10, 20, 30],
                                                                  "4": [2, 40, 50, 60]}
    back = WorkerInfo.from_dict(orjson.loads(orjson.dumps(data)))
    assert back == info and back.statistics == info.statistics


def test_worker_info_from_an_older_dict_without_failed_or_statistics() -> None:
    data = WorkerInfo(worker_id="w1", host="h", device="cpu").to_dict()
    del data["failed"], data["statistics"], data["overrides"]
    old = WorkerInfo.from_dict(data)
    assert old.failed == {} and old.statistics == StatisticsReport() and old.overrides == {}


def test_an_override_is_news() -> None:
    # A facade waiting for a load with a configuration waits for a heartbeat that says so.
    base = WorkerInfo(worker_id="w1", host="h", device="cpu", loaded={"mlp": (2,)})
    assert WorkerInfo(worker_id="w1", host="h", device="cpu", loaded={"mlp": (2,)},
                      overrides={"mlp:2": "{}"}) != base


def test_batch_counters_alone_are_no_news() -> None:
    # The reconciler announces a heartbeat only when it differs from the last one announced:
    # counters change with every batch and must not turn each heartbeat into an event.
    base = WorkerInfo(worker_id="w1", host="h", device="cpu", loaded={"mlp": (2,)})
    assert WorkerInfo(worker_id="w1", host="h", device="cpu", loaded={"mlp": (2,)},
                      statistics=report("mlp:2")) == base
