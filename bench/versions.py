"""``--compare-versions``: every version of a model loaded on the same servers, each driven in
turn with its version pinned in the request.

Which versions and protocols come from the repository (``--repo``): every version of the model;
v1 JSON, and the OpenAI embeddings API too when the model declares an ``embeddings:`` section
(``--protocol`` names one instead). The servers start with the active version loaded; the others
are loaded through ``POST /v1/models:load``, and the levels start once every facade sees each one
served by every worker, so no level pays for a load. Only the version driven gets requests: the
others' batchers sit idle. ``LIBRARIES`` names, per model, the library call that the direct
baseline also measures (minilm: ``SentenceTransformer.encode``, what version 1 wraps).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.direct import DirectResult
from bench.minilm_versions import LIBRARY, encode_rates
from bench.payload import ModelInfo, local_model_info
from harness.process import get_status

__all__ = ["BATCHES", "LIBRARIES", "load_versions", "pinned_infos", "version_protocols"]

BATCHES = (1, 8, 32)
"""Batch sizes of each version's direct baseline, besides those its served levels formed."""


LIBRARIES: dict[str, tuple[str, Callable[[Sequence[int], float], list[DirectResult]]]] = {
    "minilm": (LIBRARY, encode_rates)}
"""Model name → (label, rates at each batch size over a duration) of the library call."""


def version_protocols(repo: str, name: str) -> tuple[str, ...]:
    """v1, and ``openai`` for a model whose newest version serves embeddings."""
    from common.model.repository import ModelRepository

    config = ModelRepository(Path(repo)).get(name).config
    return ("v1", "openai") if config.embeddings is not None else ("v1",)


def pinned_infos(repo: str, name: str) -> list[ModelInfo]:
    """Every version of ``name`` in the repository, oldest first, pinned."""
    from common.model.repository import ModelRepository

    versions = sorted(ModelRepository(Path(repo)).versions(name))
    return [dataclasses.replace(local_model_info(repo, name, v), pinned=True) for v in versions]


def _post_load(base_url: str, name: str, version: int) -> None:
    request = urllib.request.Request(
        f"{base_url}/v1/models:load", json.dumps({"name": name, "version": version}).encode(),
        {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120.0):
        pass


def _pending(base_urls: Sequence[str], name: str, versions: Sequence[int], workers: int
             ) -> str | None:
    """The first version some facade does not yet see on ``workers`` workers; raises when a
    worker failed to load it."""
    for url in base_urls:
        answer = get_status(f"{url}/v1/models/{name}")
        if answer is None or answer[0] != 200:
            return f"{url}/v1/models/{name}"
        summary = json.loads(answer[1])
        for version in versions:
            if why := summary.get("failed", {}).get(str(version)):
                raise RuntimeError(f"{name} version {version} failed to load: {why}")
            serving = len(summary.get("workers", {}).get(str(version), []))
            if serving < workers:
                return f"{url}: {name} version {version} served by {serving} of {workers}"
    return None


def load_versions(base_urls: Sequence[str], name: str, versions: Sequence[int], workers: int,
                  timeout_s: float = 300.0) -> None:
    """Load every version through the first facade and wait until each facade sees each one
    served by ``workers`` workers (an ONNX export on a first load takes seconds)."""
    for version in versions:
        _post_load(base_urls[0], name, version)
    deadline = time.monotonic() + timeout_s
    while (pending := _pending(base_urls, name, versions, workers)) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"versions not loaded in {timeout_s:.0f} s: waiting for {pending}")
        time.sleep(0.2)
