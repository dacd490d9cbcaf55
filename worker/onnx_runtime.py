"""The ``onnx`` runtime: a model.onnx run by onnxruntime, numpy in and numpy out.

``load`` opens an ``onnxruntime.InferenceSession`` on ``CPUExecutionProvider`` (on a ``cuda``
device ``CUDAExecutionProvider`` first, on the device's index; the load fails if onnxruntime
cannot run it there instead of falling back to the CPU as onnxruntime would), with as many
intra-op threads as torch has (``torch.get_num_threads()``: what ``INFERNO_TORCH_THREADS`` and
``WorkerSettings.intra_op_threads`` set at start-up, so a worker has one thread setting), one
inter-op thread and sequential execution: the batcher runs ``max_concurrency`` batches at once.

Before the session serves, the ONNX graph's inputs and outputs are checked against the
signature (``signature_mismatches``): the load fails naming every tensor that differs, rather
than the first batch failing. Batches reach ``session.run`` as the requests' numpy arrays,
concatenated (no torch tensor on the way), and ``run`` returns numpy arrays in those dtypes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from common.model.dtypes import DType
from common.model.signature import TensorSpec
from worker.runtime import Array, Runtime

__all__ = ["INSTALL", "ONNX_TYPES", "MissingExtra", "OnnxRuntime", "signature_mismatches"]

INSTALL = "pip install 'inferno-serve[onnx]'"

ONNX_TYPES: dict[str, DType] = {
    "tensor(bool)": DType.BOOL, "tensor(float16)": DType.FLOAT16,
    "tensor(float)": DType.FLOAT32, "tensor(double)": DType.FLOAT64,
    "tensor(string)": DType.STRING,
    **{f"tensor({d.value})": d for d in (DType.INT8, DType.INT16, DType.INT32, DType.INT64,
                                          DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64)},
}
"""onnxruntime's tensor type names and the signature's dtypes they hold. No bfloat16: its Python
API has no numpy type for it (an output of it cannot be read), so such a signature is refused."""


class MissingExtra(ImportError):
    """The ``onnx`` extra (onnxruntime) is not installed."""


class OnnxRuntime(Runtime):
    staged: ClassVar[bool] = False  # onnxruntime copies host arrays to the device itself
    _session: Any = None

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingExtra(f"format onnx needs the onnx extra (onnxruntime): {INSTALL} "
                               f"({exc})") from exc
        if self.config.artifact is None:  # ModelConfig refuses this: only an unvalidated one
            raise ValueError(f"model {self.config.name}: format onnx needs 'artifact'")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(self.context.directory / self.config.artifact),
                                       options, providers=self._providers(ort))
        if self.device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"onnxruntime could not run {self.config.artifact} on "
                               f"{self.device} (it fell back to {session.get_providers()}; "
                               "its log says why)")
        problems = signature_mismatches(self.config.signature.inputs,
                                        self.config.signature.outputs, session,
                                        self.config.artifact)
        if problems:
            raise ValueError(f"{self.config.artifact} does not match model.yaml's signature: "
                             + "; ".join(problems))
        self._session = session

    def _providers(self, ort: Any) -> list[Any]:
        if self.device.type != "cuda":
            return ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(f"device {self.device} needs onnxruntime's "
                               f"CUDAExecutionProvider, which this onnxruntime lacks (it has "
                               f"{', '.join(available)}): install onnxruntime-gpu")
        return [("CUDAExecutionProvider", {"device_id": self.device.index or 0}),
                "CPUExecutionProvider"]

    def _to_tensor(self, array: Array, dtype: DType) -> Array:
        return array  # onnxruntime takes the numpy array itself, on any device

    def _call(self, inputs: dict[str, Any]) -> Mapping[str, Any]:
        if self._session is None:
            raise self._not_loaded()
        names = self.config.signature.output_names
        return dict(zip(names, self._session.run(names, inputs), strict=True))

    def unload(self) -> None:
        self._session = None
        super().unload()


def signature_mismatches(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                         session: Any, artifact: str) -> list[str]:
    """What differs between the signature and the session's graph, one line per difference:
    names (the signature's inputs are the graph's, its outputs among the graph's), optional
    inputs (an ONNX graph input is always required), dtypes, ranks, fixed dimensions and the
    batch dimension, which must be dynamic (a symbolic name or unknown)."""
    problems = []
    for kind, specs, args in (("input", inputs, session.get_inputs()),
                              ("output", outputs, session.get_outputs())):
        graph = {arg.name: arg for arg in args}
        for spec in specs:
            arg = graph.get(spec.name)
            if arg is None:
                problems.append(f"{kind} '{spec.name}' is not in {artifact} (its {kind}s: "
                                f"{', '.join(graph) or 'none'})")
            else:
                problems += _tensor_mismatches(kind, spec, arg.type, arg.shape, artifact)
        if kind == "input":
            declared = {s.name for s in specs}
            problems += [f"{artifact} input '{n}' is not in model.yaml's signature"
                         for n in graph if n not in declared]
    return problems


def _tensor_mismatches(kind: str, spec: TensorSpec, onnx_type: str,
                       onnx_shape: Sequence[int | str | None], artifact: str) -> list[str]:
    where = f"{kind} '{spec.name}'"
    problems = []
    if spec.dtype is DType.BFLOAT16:
        problems.append(f"{where}: bfloat16 is not served by format onnx (onnxruntime's "
                        "Python API has no numpy type for it)")
    elif ONNX_TYPES.get(onnx_type) is not spec.dtype:
        problems.append(f"{where}: {spec.dtype} in model.yaml, {onnx_type} in {artifact}")
    if spec.optional:
        problems.append(f"{where} is optional in model.yaml, but an ONNX graph's inputs are "
                        "all required")
    shown = _shape(onnx_shape)
    if len(onnx_shape) != len(spec.shape):
        problems.append(f"{where}: rank {len(spec.shape)} {_shape(spec.shape)} in model.yaml, "
                        f"rank {len(onnx_shape)} {shown} in {artifact}")
        return problems
    if isinstance(onnx_shape[0], int):
        problems.append(f"{where}: {artifact} fixes the batch dimension at {onnx_shape[0]} "
                        f"({shown}); export it dynamic, batches vary")
    problems += [f"{where}: dimension {i} is {want} in model.yaml, {have} in {artifact}"
                 for i, (want, have) in enumerate(zip(spec.shape, onnx_shape, strict=True))
                 if isinstance(want, int) and isinstance(have, int) and want != have]
    return problems


def _shape(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
