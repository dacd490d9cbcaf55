"""The bench's generated inputs for string models (minilm), and its direct baseline for Python
models: the worker's runtime called in process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.direct import measure
from bench.payload import SENTENCES, ModelInfo, TensorInfo, example_array, v1_json

ROOT = Path(__file__).resolve().parents[3]


def test_string_inputs_are_short_sentences() -> None:
    array = example_array("string", ["batch"], 5, np.random.default_rng(1))
    assert array.dtype == object and array.shape == (5,)
    assert all(text in SENTENCES for text in array.tolist())
    assert all(len(text.split()) <= 12 for text in SENTENCES)


def test_v1_body_of_a_string_model_is_a_list_of_strings() -> None:
    model = ModelInfo("minilm", 1, (TensorInfo("text", "string", ("batch",)),), 64)
    request = v1_json(model, 3, seed=0)
    body = json.loads(request.body)
    texts = body["inputs"]["text"]["data"]
    assert request.path == "/v1/models/minilm:predict" and len(texts) == 3
    assert all(text in SENTENCES for text in texts)


def test_direct_baseline_runs_a_python_model() -> None:
    """bag is a Python entrypoint: measured through the runtime, not skipped."""
    results = measure(ROOT / "models", "bag", None, [1, 4], duration_s=0.08)
    assert [r.batch for r in results] == [1, 4]
    assert all(r.calls_per_s > 0 and r.rows_per_s == r.calls_per_s * r.batch for r in results)
