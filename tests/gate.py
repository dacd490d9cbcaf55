"""A gate the ``slow`` test model waits on: a request with a negative ``delay_ms`` holds its
batch, and the model's single runner slot, until the test opens the gate."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

GATE_VARIABLE = "INFERNO_TEST_SLOW_GATE"
HOLD = -1.0
"""``delay_ms`` of a request that waits for the gate."""


class Gate:
    def __init__(self, path: Path) -> None:
        self._path = path

    def open(self) -> None:
        self._path.touch()


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """The gate of in-process servers (the model reads the variable at each batch); opened at
    the end of the test whatever happened, so no batch stays held."""
    path = tmp_path / "slow-gate-open"
    monkeypatch.setenv(GATE_VARIABLE, str(path))
    opened = Gate(path)
    yield opened
    opened.open()


async def until_done(tasks: Collection[asyncio.Task[Any]], count: int,
                     timeout: float = 30.0) -> None:
    """Wait until ``count`` of ``tasks`` are done: while a gate holds the model, those are the
    requests answered without it (refused at once)."""
    async with asyncio.timeout(timeout):
        while sum(t.done() for t in tasks) < count:
            await asyncio.wait([t for t in tasks if not t.done()],
                               return_when=asyncio.FIRST_COMPLETED)
