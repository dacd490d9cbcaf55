"""The heap freeze (INFERNO_GC_FREEZE, common/heap.py): a served process under a steady load
runs no full garbage collection, and what a full collection would still traverse stays small.

Without the freeze, a process that imported torch and loaded models collects its ~200k objects
in every gen-2 collection (the p99 tail measured in docs/performance.md); with it, they sit in the
permanent generation and requests allocate little that lives on.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import httpx

from tests.integration.conftest import Start, x_rows

REQUESTS = 1500
CONCURRENCY = 16


async def test_a_steady_load_runs_no_full_collection(start_server: Start) -> None:
    _, client = await start_server(preload=["mlp"], gc_freeze=True)
    frozen = gc.get_freeze_count()
    assert frozen > 50_000, "start-up and the model load were frozen"
    collections: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    body = {"inputs": x_rows(1)}
    remaining = iter(range(REQUESTS))

    async def caller(http: httpx.AsyncClient) -> None:
        for _ in remaining:
            assert (await http.post("/v1/models/mlp:predict", json=body)).status_code == 200

    gc.callbacks.append(on_gc)
    try:
        await asyncio.gather(*(caller(client) for _ in range(CONCURRENCY)))
    finally:
        gc.callbacks.remove(on_gc)
    assert collections.count(0) > 0, "the load allocated: young collections ran"
    assert 2 not in collections, f"full collections under load: {collections.count(2)}"
    # What a full collection would traverse now: a small fraction of the frozen heap.
    assert len(gc.get_objects()) < frozen / 4
