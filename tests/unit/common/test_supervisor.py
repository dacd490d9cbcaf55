"""Supervised loops: a loop that raises is logged and restarted after a backoff, and is *down*
until then; a cancelled loop stops, a loop that returns has finished. Every wait here is on an
event the loops set: no sleeps."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.supervisor import Backoff, Supervisor, stop_tasks

FAST = Backoff(initial_s=0.001, max_s=0.01)


class Transitions:
    """The supervisor's down/up changes, in order, and an event per change."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.changed = asyncio.Event()

    def __call__(self, name: str, why: str | None) -> None:
        self.seen.append((name, why))
        self.changed.set()

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_a_loop_that_raises_is_restarted_and_down_until_then(
        caplog: pytest.LogCaptureFixture) -> None:
    transitions = Transitions()
    supervisor = Supervisor(FAST, on_change=transitions)
    runs = 0
    restarted = asyncio.Event()
    down_at_failure: dict[str, str] = {}

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("a bug")
        restarted.set()
        await asyncio.Event().wait()  # runs until cancelled

    def record(name: str, why: str | None) -> None:
        if why is not None:
            down_at_failure.update(supervisor.down())

    supervisor.add_listener(record)
    with caplog.at_level(logging.ERROR, logger="common.supervisor"):
        task = supervisor.start("the loop", loop)
        async with asyncio.timeout(10):
            await restarted.wait()
    assert down_at_failure == {"the loop": "ValueError: a bug"}
    assert transitions.seen == [("the loop", "ValueError: a bug"), ("the loop", None)]
    assert supervisor.down() == {}
    failure = next(r for r in caplog.records if "failed; restarting" in r.getMessage())
    assert failure.exc_info is not None and failure.exc_info[0] is ValueError  # the traceback
    await stop_tasks([task])
    assert task.cancelled()


async def test_a_loop_down_when_stopped_is_no_longer_down() -> None:
    supervisor = Supervisor(Backoff(initial_s=3600, max_s=3600))
    transitions = Transitions()
    supervisor.add_listener(transitions)

    async def loop() -> None:
        raise RuntimeError("always")

    task = supervisor.start("broken", loop)
    await transitions.wait(1)
    assert supervisor.down() == {"broken": "RuntimeError: always"}
    await stop_tasks([task])
    assert supervisor.down() == {}


async def test_cancelled_is_stopped_not_restarted() -> None:
    supervisor = Supervisor(FAST)
    runs = 0
    started = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.Event().wait()

    task = supervisor.start("loop", loop)
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == 1 and supervisor.down() == {}


async def test_a_loop_that_returns_has_finished() -> None:
    supervisor = Supervisor(FAST)
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1

    await supervisor.start("once", loop)
    assert runs == 1 and supervisor.down() == {}


async def test_every_failure_waits_longer_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=5.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_repeated_failures_restart_each_time() -> None:
    transitions = Transitions()
    supervisor = Supervisor(FAST, on_change=transitions)
    runs = 0
    third = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OSError(f"failure {runs}")
        third.set()

    task = supervisor.start("flaky", loop)
    async with asyncio.timeout(10):
        await third.wait()
    await task
    assert [why for _, why in transitions.seen] == [
        "OSError: failure 1", None, "OSError: failure 2", None]


async def test_the_process_supervisor_gauges_what_is_down() -> None:
    from prometheus_client import CollectorRegistry

    from common.metrics import supervisor_for

    registry = CollectorRegistry()
    supervisor = supervisor_for(registry)
    supervisor.backoff = Backoff(initial_s=3600, max_s=3600)
    transitions = Transitions()
    supervisor.add_listener(transitions)

    async def loop() -> None:
        raise ValueError("down")

    task = supervisor.start("worker heartbeat", loop)
    await transitions.wait(1)
    assert registry.get_sample_value("inferno_loop_down", {"loop": "worker heartbeat"}) == 1
    await stop_tasks([task])
    assert registry.get_sample_value("inferno_loop_down", {"loop": "worker heartbeat"}) == 0


async def test_a_swallowed_cancellation_is_repeated() -> None:
    started = asyncio.Event()
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        started.set()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a timeout expiring at the same moment can do

    task = asyncio.create_task(stubborn())
    await started.wait()
    async with asyncio.timeout(10):
        await stop_tasks([task], timeout=5)
    assert task.cancelled() and swallowed == 1
