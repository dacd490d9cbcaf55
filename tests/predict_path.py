"""The project modules one predict enters, in order, as a profiler on every thread sees them.

docs/architecture.md lists them per mode; tests/integration/test_predict_path.py and
tests/distributed/test_predict_path.py compare that list with what a real predict does.

A module is *entered* when a function of it is called from another module (or from outside the
project: the event loop, a thread pool). Calls within a module, and a coroutine resuming after
an ``await``, are not entries.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "facade", "worker", "inferno")
DOC = ROOT / "docs" / "architecture.md"


class PathTrace:
    """Install before the threads of interest start (``threading.setprofile`` reaches only
    threads started afterwards), then ``record`` around one predict."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self._on = False
        self._seen: list[FrameType] = []  # resumed coroutines are the same frame; kept alive
        self._seen_ids: set[int] = set()
        self._modules: dict[str, str | None] = {}

    def _module(self, filename: str) -> str | None:
        module = self._modules.get(filename, "")
        if module == "":
            path = Path(filename)
            inside = path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in PACKAGES
            module = str(path.relative_to(ROOT)) if inside else None
            self._modules[filename] = module
        return module

    def _profile(self, frame: FrameType, event: str, _: Any) -> None:
        if event != "call" or not self._on or id(frame) in self._seen_ids:
            return
        self._seen.append(frame)
        self._seen_ids.add(id(frame))
        module = self._module(frame.f_code.co_filename)
        caller = frame.f_back
        if module is not None and (caller is None
                                   or self._module(caller.f_code.co_filename) != module):
            self.entries.append(module)

    @contextmanager
    def installed(self) -> Iterator[PathTrace]:
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        try:
            yield self
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            self._seen.clear()

    @contextmanager
    def record(self) -> Iterator[None]:
        self.entries.clear()
        self._seen.clear()
        self._seen_ids.clear()
        self._on = True
        try:
            yield
        finally:
            self._on = False

    def modules(self) -> list[str]:
        """Each module entered, once, in the order of its first entry."""
        return list(dict.fromkeys(self.entries))


def documented(mode: str) -> list[str]:
    """The modules docs/architecture.md lists for ``mode`` ("embedded", "distributed"): the
    numbered items between ``<!-- predict path: mode -->`` and ``<!-- end of path -->``."""
    text = DOC.read_text()
    section = text[text.index(f"<!-- predict path: {mode} -->"):]
    section = section[:section.index("<!-- end of path -->")]
    return re.findall(r"^\d+\. \*\*`([^`]+)`\*\*", section, flags=re.MULTILINE)


BAG = {"inputs": {"tokens": {"data": [[1, 2, 3]]}, "mask": {"data": [[True, True, False]]}}}
"""A v1 predict of the sample model ``bag``."""


async def record_predict(app: ASGIApp, trace: PathTrace) -> None:
    """Record one v1 predict through ``app``, after three that warm up its caches."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://inferno") as client:
        for _ in range(3):
            assert (await client.post("/v1/models/bag:predict", json=BAG)).status_code == 200
        with trace.record():
            response = await client.post("/v1/models/bag:predict", json=BAG)
    assert response.status_code == 200, response.text
