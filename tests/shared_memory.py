"""System shared memory objects for the tests of Triton's shared memory extension, made with
tritonclient's own utilities (``tritonclient.utils.shared_memory``) as a client makes them.

``regions`` (a fixture: import ``regions_fixture`` into the test module) creates objects under
``/dev/shm`` with keys unique to the test process, and destroys every one at the test's end,
whatever happened: ``/dev/shm`` is left as the test found it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.utils.shared_memory as shm

ROOT = Path("/dev/shm")
_PREFIX = f"inferno_test_{os.getpid()}_"
_numbers = itertools.count()


class Regions:
    def __init__(self) -> None:
        self._handles: list[Any] = []

    def create(self, name: str, byte_size: int) -> tuple[str, Any]:
        """A new object of ``byte_size`` bytes, for the region ``name``: its key and handle."""
        key = f"/{_PREFIX}{next(_numbers)}"
        handle = shm.create_shared_memory_region(name, key, byte_size, create_only=True)
        self._handles.append(handle)
        return key, handle

    def destroy(self) -> None:
        while self._handles:
            shm.destroy_shared_memory_region(self._handles.pop())


@pytest.fixture(name="regions")
def regions_fixture() -> Iterator[Regions]:
    made = Regions()
    try:
        yield made
    finally:
        made.destroy()
    assert not list(ROOT.glob(f"{_PREFIX}*")), "a test left objects in /dev/shm"


def path_of(key: str) -> Path:
    """The file of the object ``key`` (``/name``)."""
    return ROOT / key[1:]
