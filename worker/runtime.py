"""Model runtimes: load a model version, run one batch, unload.

A runtime speaks numpy at its edges and torch inside (onnx: numpy throughout). The batcher
hands ``predict_parts`` each request's arrays (``Parts``) and splits the outputs; ``predict``
takes one array per input. Both block and run on the batcher's executor thread, under
``torch.inference_mode``. On the CPU the requests are concatenated once (not at all for one
request: the numpy memory is the tensor) and the outputs are views of torch's; on CUDA they are
concatenated straight into reused pinned staging buffers, then one asynchronous copy each way per
tensor and one synchronisation per batch (``worker/device_buffers.py``).

- ``torchscript``: ``torch.jit.load(artifact)``; ``forward`` takes the inputs positionally in
  signature order and returns a tensor, a tuple/list (signature output order) or a dict by name.
- ``onnx``: ``artifact: model.onnx`` run by onnxruntime (``worker/onnx_runtime.py``): numpy
  arrays straight into ``session.run``, no torch tensor; the graph checked against the signature
  at load.
- ``python``: ``entrypoint: module:factory``; ``factory(context)`` returns a callable taking a dict
  of tensors and returning a dict of tensors (or numpy arrays). A ``string`` input arrives as
  ``array.tolist()`` (a ``list[str]`` for shape ``[batch]``), never on the device; a string
  output may be a (nested) list of ``str`` or a numpy array of them. ``module`` is looked up next to
  model.yaml first, then on ``sys.path``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from common.errors import WorkerFailed
from common.model.config import Device, ModelConfig, ModelFormat
from common.model.dtypes import DType, float_to_bf16_bits
from common.model.signature import BATCH, TensorSpec
from common.model.strings import string_array
from worker.device_buffers import DeviceTransfer, StagedBatch, stageable

__all__ = ["Parts", "Runtime", "RuntimeContext", "RuntimeNotLoaded", "create_runtime",
           "resolve_device"]

Array = npt.NDArray[Any]
Parts = Mapping[str, Sequence[Array]]
"""A batch as its requests' arrays: per input, one array per request, in the batch's order
(each with the same non-batch dimensions), to be concatenated along the batch dimension."""
ModelFn = Callable[[dict[str, torch.Tensor]], Mapping[str, Any]]

# Inputs decoded from base64 are read-only numpy views; the model never writes to them (inference
# mode), so sharing their memory is safe and the copy torch asks for would be waste.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_TORCH_DTYPES: dict[DType, torch.dtype] = {
    DType.BOOL: torch.bool, DType.UINT8: torch.uint8, DType.UINT16: torch.uint16,
    DType.UINT32: torch.uint32, DType.UINT64: torch.uint64, DType.INT8: torch.int8,
    DType.INT16: torch.int16, DType.INT32: torch.int32, DType.INT64: torch.int64,
    DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT32: torch.float32, DType.FLOAT64: torch.float64,
}


def resolve_device(requested: Device) -> torch.device:
    if requested is Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested is Device.CUDA and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(requested.value)


class RuntimeNotLoaded(WorkerFailed):
    """A batch reached a runtime before ``load`` or after ``unload``: the worker's bookkeeping
    broke, not the model (the batcher passes it on as the ``worker_failed`` it is)."""


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """What a Python model's factory receives."""

    config: ModelConfig
    directory: Path
    device: torch.device


class Runtime(ABC):
    staged: ClassVar[bool] = True
    """Whether batches reach a CUDA device through ``DeviceTransfer`` (torch runtimes); False
    where the runtime's library moves host arrays itself."""

    def __init__(self, context: RuntimeContext, transfer: DeviceTransfer | None = None) -> None:
        """``transfer``: how batches reach the device; by default staged through reused pinned
        buffers on CUDA (worker/device_buffers.py), none on the CPU (zero-copy)."""
        self.context = context
        self.config = context.config
        self.device = context.device
        if transfer is None and self.staged and self.device.type == "cuda":
            transfer = DeviceTransfer(self.device)
        self._transfer = transfer

    def _not_loaded(self) -> RuntimeNotLoaded:
        return RuntimeNotLoaded(f"Model '{self.config.name}' version {self.config.version} is "
                                "not loaded in this runtime")

    @property
    def transfer(self) -> DeviceTransfer | None:
        """The host staging of this runtime's batches (None: they stay where they are)."""
        return self._transfer

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def _call(self, inputs: dict[str, torch.Tensor]) -> Mapping[str, Any]:
        """The model on one batch, whose inputs are what ``_to_tensor`` made of them."""

    def unload(self) -> None:
        if self._transfer is not None:
            self._transfer.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run one batch; the outputs are numpy arrays in the signature's dtypes."""
        return self.predict_parts({name: (array,) for name, array in inputs.items()})

    def predict_parts(self, parts: Parts) -> dict[str, Array]:
        """Run one batch given as its requests' arrays, concatenated where they are used."""
        with torch.inference_mode():
            if self._transfer is None:
                return self._predict_in_place({n: _joined(p) for n, p in parts.items()})
            return self._predict_staged(parts, self._transfer)

    def _predict_in_place(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        # CPU: the numpy memory is the tensor and the outputs are views of torch's (no copy).
        specs = self.config.signature.input_specs
        tensors = {n: self._to_tensor(a, specs[n].dtype) for n, a in inputs.items()}
        produced = self._call(tensors)
        return {s.name: self._to_numpy(s, _output(s, produced))
                for s in self.config.signature.outputs}

    def _predict_staged(self, parts: Parts, transfer: DeviceTransfer) -> dict[str, Array]:
        # One copy into the lease's reused (pinned) buffer, the requests concatenated by it, and
        # one to the device per input; one copy back per output, all asynchronous, then one
        # synchronisation for the batch.
        specs = self.config.signature.input_specs
        with transfer.batch() as batch:
            tensors = {n: _as_dtype(batch.to_device(n, p), specs[n].dtype)
                       if all(stageable(a) for a in p)
                       else self._to_tensor(_joined(p), specs[n].dtype) for n, p in parts.items()}
            produced = self._call(tensors)
            values = {s.name: _to_host(s, _output(s, produced), batch, transfer.device)
                      for s in self.config.signature.outputs}
            batch.synchronize()
        return {s.name: self._to_numpy(s, values[s.name]) for s in self.config.signature.outputs}

    def warm_up(self) -> None:
        """One batch of zeros at batch size 1 (symbolic dims 1), and at the largest batch on GPU
        (whenever batches are staged: the staging buffers are then sized for every runner, and
        the first full batch allocates nothing)."""
        sizes = [1]
        if self._transfer is not None and self.config.batching.max_batch_size > 1:
            sizes.append(self.config.batching.max_batch_size)
        for rows in sizes:
            self.predict({s.name: _example(s, rows) for s in self.config.signature.inputs})
        if self._transfer is not None:
            self._transfer.provision(self.config.concurrency.max_concurrency)

    def _to_tensor(self, array: Array, dtype: DType) -> Any:
        if dtype is DType.STRING:
            return array.tolist()  # Python models only (ModelConfig refuses TorchScript)
        tensor = _as_dtype(torch.from_numpy(array), dtype)
        if self.device.type != "cpu":
            tensor = tensor.to(self.device)  # what the staging cannot take
        return tensor

    def _to_numpy(self, spec: TensorSpec, value: Any) -> Array:
        if spec.dtype is DType.STRING:
            return string_array(value, spec.name)
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.device.type != "cpu":
                value = value.cpu()
            want = _TORCH_DTYPES[spec.dtype]
            if value.dtype != want:
                value = value.to(want)
            if want == torch.bfloat16:
                value = value.view(torch.int16)
            array: Array = value.numpy()
            return array.view(np.uint16) if want == torch.bfloat16 else array
        array = np.asarray(value)
        if spec.dtype is DType.BFLOAT16 and array.dtype != np.uint16:
            return float_to_bf16_bits(array)  # numbers, not bit patterns: round them
        return array if array.dtype == spec.dtype.numpy else array.astype(spec.dtype.numpy)


def _joined(parts: Sequence[Array]) -> Array:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _output(spec: TensorSpec, produced: Mapping[str, Any]) -> Any:
    if spec.name not in produced:
        raise ValueError(f"model returned no output '{spec.name}' "
                         f"(returned: {', '.join(sorted(produced)) or 'nothing'})")
    return produced[spec.name]


def _as_dtype(tensor: torch.Tensor, dtype: DType) -> torch.Tensor:
    # bfloat16 travels as its uint16 bits: the same bytes, seen as bfloat16.
    return tensor.view(torch.bfloat16) if dtype is DType.BFLOAT16 else tensor


def _to_host(spec: TensorSpec, value: Any, batch: StagedBatch, device: torch.device) -> Any:
    """A device output's copy back, started (converted to the signature's dtype on the device
    first); anything else (numpy, a tensor already on the host) as it is."""
    if (spec.dtype is DType.STRING or not isinstance(value, torch.Tensor)
            or value.device.type != device.type):
        return value
    value = value.detach()
    want = _TORCH_DTYPES[spec.dtype]
    return batch.to_host(value if value.dtype == want else value.to(want))


def _example(spec: TensorSpec, rows: int) -> Array:
    """A warm-up input: zeros, or empty strings for a string input."""
    shape = _example_shape(spec, rows)
    if spec.dtype is DType.STRING:
        array = np.empty(shape, dtype=object)
        array.fill("")
        return array
    return np.zeros(shape, spec.dtype.numpy)


def _example_shape(spec: TensorSpec, rows: int) -> tuple[int, ...]:
    return tuple(rows if d == BATCH else (d if isinstance(d, int) else 1) for d in spec.shape)


class TorchScriptRuntime(Runtime):
    _module: torch.jit.ScriptModule | None = None

    def load(self) -> None:
        if self.config.artifact is None:  # ModelConfig refuses this: only an unvalidated one
            raise ValueError(f"model {self.config.name}: format torchscript needs 'artifact'")
        module = torch.jit.load(str(self.context.directory / self.config.artifact),
                                map_location=self.device)
        module.eval()
        self._module = module

    def _call(self, inputs: dict[str, torch.Tensor]) -> Mapping[str, Any]:
        if self._module is None:
            raise self._not_loaded()
        # An optional input left out travels as None, which TorchScript takes as Optional[Tensor].
        args = [inputs.get(s.name) for s in self.config.signature.inputs]
        result = self._module(*args)
        names = self.config.signature.output_names
        if isinstance(result, torch.Tensor):
            return {names[0]: result}
        if isinstance(result, (tuple, list)):
            if len(result) != len(names):
                raise ValueError(f"model returned {len(result)} outputs, "
                                 f"the signature declares {len(names)}")
            return dict(zip(names, result, strict=True))
        if isinstance(result, Mapping):
            return result
        raise TypeError(f"model returned {type(result).__name__}, expected tensors")

    def unload(self) -> None:
        self._module = None
        super().unload()


class PythonRuntime(Runtime):
    _fn: ModelFn | None = None

    def load(self) -> None:
        if self.config.entrypoint is None:  # ModelConfig refuses this: only an unvalidated one
            raise ValueError(f"model {self.config.name}: format python needs 'entrypoint'")
        module_name, factory_name = self.config.entrypoint.split(":")
        module = _import_model_module(module_name, self.context.directory, self.config)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise AttributeError(f"entrypoint {self.config.entrypoint}: "
                                 f"{factory_name} is not a callable in {module.__name__}")
        self._fn = factory(self.context)

    def _call(self, inputs: dict[str, torch.Tensor]) -> Mapping[str, Any]:
        if self._fn is None:
            raise self._not_loaded()
        result = self._fn(inputs)
        if not isinstance(result, Mapping):
            raise TypeError(f"model returned {type(result).__name__}, expected a dict of tensors")
        return result

    def unload(self) -> None:
        self._fn = None
        super().unload()


def _import_model_module(name: str, directory: Path, config: ModelConfig) -> ModuleType:
    local = directory / (name.replace(".", "/") + ".py")
    if not local.is_file():
        return importlib.import_module(name)
    # A unique module name per model version: two versions' model.py never shadow each other.
    unique = f"inferno_models.{config.name}.v{config.version}.{name}"
    spec = importlib.util.spec_from_file_location(unique, local)
    if spec is None or spec.loader is None:  # a .py file always has a loader: say so if not
        raise ImportError(f"cannot load {local} as a Python module", name=unique)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    return module


def _onnx_runtime(context: RuntimeContext) -> Runtime:
    from worker.onnx_runtime import OnnxRuntime  # which imports this module

    return OnnxRuntime(context)


_RUNTIMES: dict[ModelFormat, Callable[[RuntimeContext], Runtime]] = {
    ModelFormat.TORCHSCRIPT: TorchScriptRuntime,
    ModelFormat.PYTHON: PythonRuntime,
    ModelFormat.ONNX: _onnx_runtime,
}


def create_runtime(config: ModelConfig, directory: Path, default_device: Device) -> Runtime:
    """A runtime for one model version (not loaded yet: call ``load`` on a worker thread)."""
    device = resolve_device(config.device or default_device)
    return _RUNTIMES[config.format](RuntimeContext(config, directory, device))
