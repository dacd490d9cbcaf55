"""Waiting on another process, which has no event to await: bounded polls."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

__all__ = ["scrape", "until"]


def scrape(port: int, sample: str) -> float:
    """One sample's value from a worker process's Prometheus endpoint (0 when absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - another process: nothing to await
            await asyncio.sleep(0.02)
