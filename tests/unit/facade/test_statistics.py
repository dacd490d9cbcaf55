"""The facade's side of Triton's statistics: the live workers' reports summed, the versions
listed, Triton's shape, and a read that waits for the report a worker has due.

Workers are heartbeats written to a real ``InMemoryStateStore`` (quietly, ``announce=False``, as
a worker reports its counters); the view over it refreshes only on events or once a minute, so
whatever a statistics call sees sooner it read from the store itself. The repository is the
sample one (models/: mlp versions 1 and 2, bag 1, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from google.protobuf import json_format
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2 as pb

from common.errors import ModelNotFound, StateUnavailable
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.state.memory import InMemoryStateStore
from common.state.statistics import BatchSizeStatistics, StatisticsReport, VersionStatistics
from common.state.store import WorkerInfo
from facade.cluster_view import ClusterView
from facade.statistics import model_statistics, summed
from tests.unit.conftest import SAMPLE_MODELS

MINUTE = 60.0


class Store(InMemoryStateStore):
    """The in-memory store, telling when workers are listed, and able to be unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.listed = asyncio.Event()
        self.down = False

    async def workers(self) -> list[WorkerInfo]:
        if self.down:
            raise StateUnavailable("Redis is unreachable")
        self.listed.set()
        return await super().workers()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    store = Store()
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture
async def view(store: Store) -> AsyncIterator[ClusterView]:
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    view = ClusterView(store, repository, FacadeMetrics(CollectorRegistry()), MINUTE, MINUTE)
    await view.start()
    yield view
    await view.aclose()


def counted(rows: int, batches: int, at_ms: int = 1_700_000_000_000) -> VersionStatistics:
    """Counters of ``batches`` batches of ``rows`` one-row requests each."""
    requests = rows * batches
    return VersionStatistics(
        last_inference_ms=at_ms, inference_count=requests, execution_count=batches,
        success_count=requests, success_ns=10 * requests, queue_ns=4 * requests,
        compute_input_ns=requests, compute_infer_ns=4 * requests, compute_output_ns=requests,
        batches={rows: BatchSizeStatistics(batches, batches, 4 * batches, batches)})


async def beat(store: Store, worker_id: str, versions: dict[str, VersionStatistics],
               taken_at: float = 0.0, interval_s: float = 0.0) -> None:
    report = StatisticsReport(versions, taken_at, interval_s)
    await store.put_worker(WorkerInfo(worker_id=worker_id, host="h", device="cpu",
                                      statistics=report), ttl_s=MINUTE, announce=False)


def entry(stats: dict[str, object], version: str, name: str = "mlp") -> dict[str, object]:
    [found] = [s for s in stats["model_stats"]  # type: ignore[attr-defined]
               if s["name"] == name and s["version"] == version]
    return found  # type: ignore[no-any-return]


def test_two_workers_counters_of_a_version_add_up_and_versions_stay_apart() -> None:
    workers = [WorkerInfo(worker_id=w, host="h", device="cpu",
                          statistics=StatisticsReport(versions))
               for w, versions in (("a", {"mlp:2": counted(1, 3, at_ms=5),
                                          "mlp:1": counted(2, 1)}),
                                   ("b", {"mlp:2": counted(4, 2, at_ms=9)}))]
    totals = summed(workers)
    assert totals.keys() == {"mlp:1", "mlp:2"}
    both = totals["mlp:2"]
    assert (both.inference_count, both.execution_count, both.success_count) == (11, 5, 11)
    assert both.last_inference_ms == 9  # the latest, not a sum
    assert both.batches == {1: BatchSizeStatistics(3, 3, 12, 3),
                            4: BatchSizeStatistics(2, 2, 8, 2)}
    assert totals["mlp:1"] == counted(2, 1)
    # Summing copies: a worker's report is never changed by it.
    assert workers[0].statistics.versions["mlp:2"] == counted(1, 3, at_ms=5)


async def test_every_version_of_the_repository_is_listed_zero_where_none_ran(
        store: Store, view: ClusterView) -> None:
    await beat(store, "a", {"mlp:2": counted(1, 3)})
    stats = await model_statistics(view)
    listed = [(s["name"], s["version"]) for s in stats["model_stats"]]
    assert listed == [(n, str(v)) for n in view.repository.names()
                      for v in sorted(view.repository.versions(n))]
    assert entry(stats, "2")["inference_count"] == 3
    never = next(s for s in stats["model_stats"] if s["name"] == "bag")
    assert never == {
        "name": "bag", "version": "1", "last_inference": 0, "inference_count": 0,
        "execution_count": 0,
        "inference_stats": {k: {"count": 0, "ns": 0} for k in (
            "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
            "cache_hit", "cache_miss")},
        "batch_stats": [], "memory_usage": [], "response_stats": {}}


async def test_a_model_lists_its_versions_and_a_version_itself(store: Store,
                                                              view: ClusterView) -> None:
    await beat(store, "a", {"mlp:2": counted(1, 3), "mlp:1": counted(1, 1)})
    model = await model_statistics(view, "mlp")
    assert [s["version"] for s in model["model_stats"]] == ["1", "2"]
    one = await model_statistics(view, "mlp", 2)
    [stat] = one["model_stats"]
    assert stat["inference_stats"]["success"] == {"count": 3, "ns": 30}
    assert stat["inference_stats"]["queue"] == {"count": 3, "ns": 12}
    assert stat["batch_stats"] == [{"batch_size": 1, "compute_input": {"count": 3, "ns": 3},
                                    "compute_infer": {"count": 3, "ns": 12},
                                    "compute_output": {"count": 3, "ns": 3}}]


async def test_an_unknown_model_or_version_is_not_found(view: ClusterView) -> None:
    with pytest.raises(ModelNotFound, match="'nope'"):
        await model_statistics(view, "nope")
    with pytest.raises(ModelNotFound, match="no version 7"):
        await model_statistics(view, "mlp", 7)


async def test_a_report_written_quietly_is_read_at_once(store: Store, view: ClusterView) -> None:
    await beat(store, "a", {"mlp:2": counted(1, 1)})
    assert entry(await model_statistics(view, "mlp"), "2")["inference_count"] == 1
    await beat(store, "a", {"mlp:2": counted(1, 4)})  # no event: the view's cache is behind
    assert entry(await model_statistics(view, "mlp"), "2")["inference_count"] == 4


async def test_a_worker_that_left_takes_its_counts_out_of_the_sum(
        store: Store, view: ClusterView) -> None:
    await beat(store, "a", {"mlp:2": counted(1, 2)})
    await beat(store, "b", {"mlp:2": counted(1, 5)})
    assert entry(await model_statistics(view, "mlp", 2), "2")["inference_count"] == 7
    await store.remove_worker("b")
    assert entry(await model_statistics(view, "mlp", 2), "2")["inference_count"] == 2


async def test_a_read_waits_for_the_report_a_worker_has_due(store: Store,
                                                           view: ClusterView) -> None:
    # Reported just now, with more counted since: the next report is due within 0.2 s.
    await beat(store, "a", {"mlp:2": counted(1, 1)}, taken_at=time.time(), interval_s=0.2)
    store.listed.clear()
    loop = asyncio.get_running_loop()
    began = loop.time()
    reading = asyncio.create_task(model_statistics(view, "mlp", 2))
    await store.listed.wait()  # the first reading is done: the due report comes after it
    await beat(store, "a", {"mlp:2": counted(1, 2)})
    assert entry(await reading, "2")["inference_count"] == 2
    assert loop.time() - began >= 0.2


async def test_an_old_report_or_one_without_an_interval_is_not_waited_for(
        store: Store, view: ClusterView) -> None:
    loop = asyncio.get_running_loop()
    for taken_at, interval_s in ((time.time() - 5, 0.2), (time.time(), 0.0)):
        await beat(store, "a", {"mlp:2": counted(1, 1)}, taken_at, interval_s)
        began = loop.time()
        await model_statistics(view, "mlp", 2)
        assert loop.time() - began < 0.15, (taken_at, interval_s)


async def test_with_the_store_away_the_last_reading_answers(store: Store,
                                                           view: ClusterView) -> None:
    await beat(store, "a", {"mlp:2": counted(1, 3)})
    await model_statistics(view)
    store.down = True
    assert entry(await model_statistics(view, "mlp"), "2")["inference_count"] == 3


async def test_the_response_is_what_the_grpc_message_holds(store: Store,
                                                          view: ClusterView) -> None:
    await beat(store, "a", {"mlp:2": counted(2, 3)})
    stats = await model_statistics(view, "mlp")
    message = json_format.ParseDict(stats, pb.ModelStatisticsResponse())
    assert [(m.name, m.version) for m in message.model_stats] == [("mlp", "1"), ("mlp", "2")]
    two = message.model_stats[1]
    assert (two.inference_count, two.execution_count) == (6, 3)
    assert two.inference_stats.compute_infer.ns == 24
    assert [b.batch_size for b in two.batch_stats] == [2]
    # As JSON (tritonclient's as_json), a uint64 is a string.
    assert json_format.MessageToDict(message, preserving_proto_field_name=True
                                     )["model_stats"][1]["inference_count"] == "6"
