"""``inferno facade --workers 2`` as a real process tree (inferno/facade_processes.py): both
children answer predicts on the one port, ``/metrics`` from either tells of both, a child that
crashes or stops answering is replaced on its socket with no request refused, SIGTERM stops the
parent and every child (exit 0, or bounded when a child's loop is stuck), and children end with
their parent.

A child stops answering for real: SIGSTOP, or a main thread blocked on a lock (``stalls``).

Which child answered is read where production shows it, not from a test-only header: each facade
process has its own exclusive reply queue, named with its host and pid, so the reply queues in
the vhost say which processes published requests. Each request goes on a fresh connection,
which ``SO_REUSEPORT`` hashes to one of the children's sockets: 40 of them all landing on one
child has a chance of 2^-39.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.faults import facade_children as serving_children
from harness.services import rabbitmqctl
from tests.distributed.conftest import ROOT, Cluster
from tests.distributed.stalls import BLOCKED, STALL_ENV, STOPPED_WITHIN_S, text_of, until_logged
from tests.http import free_port

pytestmark = pytest.mark.asyncio

REQUESTS = 40
FRESH = httpx.Limits(max_keepalive_connections=0)  # a new connection per request


def facade_processes(cluster: Cluster, port: int, log: Path, workers: int = 2,
                     **env: str) -> subprocess.Popen[bytes]:
    """``inferno facade --workers N`` with its log in a file (a pipe nobody reads could fill
    and stall it); killed, if still running, after the test (its children follow it)."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferno", "facade", "--workers", str(workers)], cwd=ROOT,
            env=cluster.env(INFERNO_PORT=str(port), INFERNO_ACCESS_LOG="false", **env),
            stdout=subprocess.DEVNULL, stderr=stderr)
    cluster.processes.append(process)
    return process


def state_of(parent: subprocess.Popen[bytes], log: Path) -> str:
    """What a failed test says of the process tree: each facade child's state, and the log's
    end after SIGUSR1 asked each child for its threads' stacks."""
    lines = [f"parent {parent.pid}: {'running' if parent.poll() is None else parent.returncode}"]
    with contextlib.suppress(psutil.Error):
        for pid in facade_children(parent):
            child = psutil.Process(pid)
            lines.append(f"child {pid}: {child.status()}, cpu {child.cpu_times()}")
            os.kill(pid, signal.SIGUSR1)
    return "\n".join(lines) + "\n--- log (end) ---\n" + text_of(log)[-6000:]


async def until_served(client: httpx.AsyncClient, model: str) -> None:
    """Until every child sees a worker serving ``model``: 20 answers in a row on fresh
    connections, spread by the kernel over both children (a child left unasked: 2^-19)."""
    async with asyncio.timeout(90):
        seen = 0
        while seen < 20:
            listed = (await client.get("/v1/models")).json()["models"]
            serving = any(m["name"] == model and m["loaded"] for m in listed)
            seen = seen + 1 if serving else 0
            if not serving:
                await asyncio.sleep(0.1)


async def until_started(log: Path) -> None:
    """Until both children have started (each logs it)."""
    async with asyncio.timeout(60):
        while len(re.findall(r"facade process \d+ started", text_of(log))) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def facade_children(parent: subprocess.Popen[bytes]) -> list[int]:
    return [child.pid for child in serving_children(psutil.Process(parent.pid))]


def reply_queue_pids(cluster: Cluster) -> list[int]:
    """The pids in the names of the vhost's reply queues (``inferno.reply.<host>.<pid>.<id>``)."""
    vhost = cluster.broker_url.rsplit("/", 1)[1]
    names = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name").split()
    return sorted(int(n.rsplit(".", 2)[1]) for n in names if n.startswith("inferno.reply."))


def requests_counted(text: str, model: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == "infer_requests_total" and s.labels.get("model") == model)


def gauge(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


async def until_ready(client: httpx.AsyncClient, parent: subprocess.Popen[bytes],
                      log: Path) -> None:
    """Until the facade answers ready (another process: poll, bounded)."""
    async with asyncio.timeout(90):
        while True:
            assert parent.poll() is None, f"the facade exited: {text_of(log)}"
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/health/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


@dataclass
class Served:
    parent: subprocess.Popen[bytes]
    log: Path
    client: httpx.AsyncClient
    children: list[int]

    async def predict(self, i: int) -> httpx.Response:
        """``sum`` of the row [i, 1] (i + 1), on a connection of its own; a request that gets
        no answer fails the test with the process tree's state."""
        try:
            return await self.client.post("/v1/models/sum:predict",
                                          json={"inputs": {"x": {"data": [[i, 1.0]]}}})
        except httpx.HTTPError as exc:
            raise AssertionError(f"request {i}: {exc!r}\n{state_of(self.parent, self.log)}"
                                 ) from None

    async def predict_all(self, count: int = REQUESTS) -> list[httpx.Response]:
        responses: list[httpx.Response] = []
        for start in range(0, count, 8):  # a few at a time: 2 cores shared with the worker
            responses += await asyncio.gather(*(self.predict(i)
                                                for i in range(start, start + 8)))
        return responses


@contextlib.asynccontextmanager
async def serving_sum(cluster: Cluster, tmp_path: Path, **env: str) -> AsyncIterator[Served]:
    """A worker for ``sum`` and ``inferno facade --workers 2`` in front of it, ready, both
    children started."""
    cluster.worker_process(INFERNO_PRELOAD="sum")
    port, log = free_port(), tmp_path / "facade.log"
    parent = facade_processes(cluster, port, log, **env)
    # A request answers in milliseconds: 15 s without an answer is a hang, reported fast.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15,
                                 limits=FRESH) as client:
        await until_ready(client, parent, log)
        await until_started(log)
        await until_served(client, "sum")
        children = facade_children(parent)
        assert len(children) == 2, children
        yield Served(parent, log, client, children)


async def replaced(served: Served, victim: int) -> list[int]:
    """The children once ``victim`` has been replaced, as the parent logs after it starts the
    new one: two of them, the victim not among them."""
    await until_logged(f"(pid {victim}) exited -9: started pid", served.log)
    async with asyncio.timeout(60):
        while len(now := facade_children(served.parent)) < 2 or victim in now:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return now


async def test_two_facade_processes_share_the_port_and_the_metrics(running: Cluster,
                                                                   tmp_path: Path) -> None:
    async with serving_sum(running, tmp_path) as served:
        for i, response in enumerate(await served.predict_all()):
            assert response.status_code == 200, response.text
            assert response.json()["outputs"]["total"]["data"] == [i + 1.0]

        # Both children published requests, each from a reply queue of its own.
        assert reply_queue_pids(running) == sorted(served.children)

        # Whichever child serves /metrics counts every child's requests, and reads the cluster
        # (one worker, one consumer) as it is, not once per process.
        for _ in range(10):
            text = (await served.client.get("/metrics")).text
            assert requests_counted(text, "sum") == REQUESTS
            assert gauge(text, "inferno_live_workers", model="sum") == 1
            assert "process_cpu_seconds_total" not in text  # no ProcessCollector here
        async with asyncio.timeout(30):  # the queue watch reads every 2 s: poll, bounded
            while gauge(text, "inferno_queue_consumers", model="sum", version="1") != 1:
                await asyncio.sleep(0.1)
                text = (await served.client.get("/metrics")).text
        # The children's GC pauses, merged (each flushes its own every second: poll, bounded).
        async with asyncio.timeout(30):
            while not gauge(text, "inferno_gc_pause_seconds_count", generation="0"):
                await asyncio.sleep(0.1)
                text = (await served.client.get("/metrics")).text

    served.parent.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.parent.wait, 60) == 0, text_of(served.log)
    assert not [pid for pid in served.children if psutil.pid_exists(pid)], \
        "a child outlived its parent"
    assert "stopped" in text_of(served.log)


async def test_a_child_that_crashes_is_replaced_on_its_socket(running: Cluster,
                                                              tmp_path: Path) -> None:
    async with serving_sum(running, tmp_path) as served:
        parent, log = served.parent, served.log
        victim = served.children[0]
        os.kill(victim, signal.SIGKILL)
        # Sent while the replacement starts: the connections hashed to the dead child's socket
        # wait in its backlog for the new child, and none is refused.
        statuses = [r.status_code for r in await served.predict_all()]
        assert statuses == [200] * REQUESTS, text_of(log)
        now = await replaced(served, victim)
        assert parent.poll() is None
        # The replacement serves: its reply queue is there, and the dead child's went with it.
        async with asyncio.timeout(60):
            while reply_queue_pids(running) != sorted(now):
                await served.predict_all(8)

    parent.send_signal(signal.SIGTERM)
    # A crash that was replaced is no failure.
    assert await asyncio.to_thread(parent.wait, 60) == 0, text_of(log)


async def test_a_child_that_cannot_start_fails_the_parent(running: Cluster,
                                                          tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "facade.log"
    # Nothing listens on port 1: each child's broker connection is refused at start-up.
    parent = facade_processes(running, port, log,
                              INFERNO_BROKER_URL="amqp://guest:guest@127.0.0.1:1/")
    assert await asyncio.to_thread(parent.wait, 120) == 1
    assert "exited 1" in text_of(log)


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGUSR2"], ids=["stopped", "loop-blocked"])
async def test_a_child_that_stops_answering_is_replaced_on_its_socket(
        running: Cluster, tmp_path: Path, how: str) -> None:
    async with serving_sum(running, tmp_path, **STALL_ENV) as served:
        parent, log = served.parent, served.log
        victim, other = served.children
        os.kill(victim, signal.Signals[how])
        await until_logged(f"(pid {victim}) stopped answering", log)
        await replaced(served, victim)
        if how == "SIGUSR2":  # where it hung, from its own stacks (a stopped process has none),
            # which another process's log lines may cut: faulthandler writes a frame in pieces
            text = text_of(log)
            assert re.search(r" in (\{\"ts\"[^\n]*\n)*_block", text), text
        statuses = [r.status_code for r in await served.predict_all()]
        assert statuses == [200] * REQUESTS, text_of(log)

        # The other child stops answering too, and then SIGTERM: the tree still ends, bounded
        # (the stall watch or the child's own hard stop ends the stuck one).
        os.kill(other, signal.Signals[how])
        if how == "SIGUSR2":  # blocked before the stop signal comes
            await until_logged(BLOCKED, log, count=2)
        parent.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(parent.wait, STOPPED_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"not stopped in {STOPPED_WITHIN_S} s: "
                                 f"{state_of(parent, log)}") from None
        assert not psutil.pid_exists(other), state_of(parent, log)


async def test_children_stop_when_their_parent_is_killed_even_one_whose_loop_is_stuck(
        running: Cluster, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "facade.log"
    # No stall watch to speak of: the stuck child must end by itself once its parent is gone.
    parent = facade_processes(running, port, log,
                              **{**STALL_ENV, "INFERNO_FACADE_STALL_TIMEOUT_S": "600"})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await until_ready(client, parent, log)  # no worker: ready with no active model
    await until_started(log)
    children = [psutil.Process(pid) for pid in facade_children(parent)]
    assert len(children) == 2
    os.kill(children[0].pid, signal.SIGUSR2)
    await until_logged(BLOCKED, log)
    parent.kill()  # no signal to forward: the kernel sends each child SIGTERM (PDEATHSIG)
    await asyncio.to_thread(parent.wait, 30)
    _, alive = await asyncio.to_thread(psutil.wait_procs, children, STOPPED_WITHIN_S)
    assert not alive, f"children outlived a killed parent: {text_of(log)}"
    assert "exiting now" in text_of(log), text_of(log)  # the stuck one, by its hard stop
