"""ONNX models the tests build for themselves (no binary in the repository): a small torch module
exported with ``torch.onnx.export`` (the TorchScript-based exporter, ``dynamo=False``, which needs
only the ``onnx`` package), written with its model.yaml as a version of a model repository.

``Scorer`` takes ``x`` (float32 ``[batch, 4]``) and ``shift`` (int64 ``[batch, 1]``) and returns
``scores`` (float32 ``[batch, 3]``) and ``label`` (int64 ``[batch]``, the best score's index).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

__all__ = ["SIGNATURE", "Scorer", "scorer_inputs", "scorer_outputs", "write_scorer",
           "write_string_identity"]

SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]},
               {"name": "shift", "dtype": "int64", "shape": ["batch", 1]}],
    "outputs": [{"name": "scores", "dtype": "float32", "shape": ["batch", 3]},
                {"name": "label", "dtype": "int64", "shape": ["batch"]}],
}
"""model.yaml's signature of the exported ``Scorer``."""


class Scorer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.tanh(self.linear(x)) + shift.to(torch.float32)
        return scores, scores.argmax(dim=1)


def scorer_inputs(rows: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((rows, 4)).astype(np.float32),
            "shift": rng.integers(-2, 3, (rows, 1)).astype(np.int64)}


def scorer_outputs(rows: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """What ``Scorer`` itself returns for ``scorer_inputs(rows, seed)``."""
    inputs = {n: torch.from_numpy(a) for n, a in scorer_inputs(rows, seed).items()}
    with torch.inference_mode():
        scores, label = Scorer().eval()(inputs["x"], inputs["shift"])
    return {"scores": scores.numpy(), "label": label.numpy()}


def _version_dir(repo: Path, name: str, version: int) -> Path:
    directory = repo / name / str(version)
    directory.mkdir(parents=True)
    return directory


def write_scorer(repo: Path, name: str = "scorer", version: int = 1, *,
                 dynamic_batch: bool = True, signature: dict[str, Any] | None = None,
                 **yaml_keys: Any) -> Path:
    """``repo/<name>/<version>/`` with ``model.onnx`` exported from ``Scorer`` (its batch
    dimension dynamic unless ``dynamic_batch`` is False) and a model.yaml of format onnx
    (``signature``: another than ``SIGNATURE``; ``yaml_keys``: more top-level keys)."""
    directory = _version_dir(repo, name, version)
    example = {n: torch.from_numpy(a) for n, a in scorer_inputs(1).items()}
    axes = {n: {0: "batch"} for n in ("x", "shift", "scores", "label")} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        torch.onnx.export(Scorer().eval(), (example["x"], example["shift"]),
                          str(directory / "model.onnx"), input_names=["x", "shift"],
                          output_names=["scores", "label"], dynamic_axes=axes, dynamo=False)
    _write_yaml(directory, name, version, signature or SIGNATURE, yaml_keys)
    return directory


def write_string_identity(repo: Path, name: str = "echo_text", version: int = 1) -> Path:
    """A one-node graph (``Identity``) from ``text`` to ``same``, string ``[batch]``: torch
    cannot export string tensors, so this one is written with ``onnx.helper``."""
    import onnx
    from onnx import TensorProto, helper

    directory = _version_dir(repo, name, version)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])], name,
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime >= 1.17 reads it
    onnx.save(model, str(directory / "model.onnx"))
    _write_yaml(directory, name, version, {
        "inputs": [{"name": "text", "dtype": "string", "shape": ["batch"]}],
        "outputs": [{"name": "same", "dtype": "string", "shape": ["batch"]}]}, {})
    return directory


def _write_yaml(directory: Path, name: str, version: int, signature: dict[str, Any],
                keys: dict[str, Any]) -> None:
    config = {"name": name, "version": version, "format": "onnx", "artifact": "model.onnx",
              "signature": signature, **keys}
    (directory / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
