"""What the Open Inference Protocol says about models, whichever transport asks: metadata,
readiness, Triton's model configuration and repository index, the repository's load (with
Triton's load parameters) and unload, and the extensions the server lists.

The v2 REST routes (``facade.v2_routes``) and the gRPC servicer (``facade.grpc_server``) answer
from these, so both describe a model in the same words. Each reads the cluster view only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.errors import InvalidInput
from common.model.config import ModelConfig, ModelFormat
from common.model.dtypes import DType
from common.model.signature import BATCH, TensorSpec
from common.model.triton_config import override_from_triton
from common.settings import FacadeSettings, SharedMemoryKind
from facade.admin_service import AdminService
from facade.cluster_view import ClusterView
from facade.model_files import FILE_PREFIX
from facade.v2_protocol import datatype_of

__all__ = ["PLATFORMS", "config_of", "extensions", "is_ready", "load_with_parameters",
           "metadata", "repository_index", "resolve", "shape_of", "unload_every_version"]

PLATFORMS = {ModelFormat.TORCHSCRIPT: "pytorch_libtorch", ModelFormat.PYTHON: "python",
             ModelFormat.ONNX: "onnxruntime_onnx"}
_BACKENDS = {ModelFormat.TORCHSCRIPT: "pytorch", ModelFormat.PYTHON: "python",
             ModelFormat.ONNX: "onnxruntime"}
"""Triton's backend of each format (its platform: ``PLATFORMS``)."""
_TRITON_TYPE = {DType.STRING: "TYPE_STRING"}
"""Where Triton's model configuration names a type otherwise than the protocol (BYTES)."""


def extensions(settings: FacadeSettings, http: bool) -> list[str]:
    """The extensions server metadata lists, over HTTP or gRPC (``binary_tensor_data`` is
    HTTP's: over gRPC every tensor is binary), as ``settings`` turn them on."""
    names = ["binary_tensor_data"] if http else []
    names += ["model_repository", "model_configuration", "statistics"]
    if settings.shared_memory is SharedMemoryKind.SYSTEM:
        names.append("system_shared_memory")
    return names


def shape_of(spec: TensorSpec) -> list[int]:
    """A tensor's shape in the protocol: -1 for each variable dimension."""
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def resolve(view: ClusterView, name: str, version: int | None) -> ModelConfig:
    """The configuration of ``version`` (``None``: the active one, else the newest) as it is
    loaded (with the override of a load with ``config``); ``ModelNotFound`` for a model or
    version the repository lacks."""
    if version is None:
        state = view.models.get(name)
        version = state.active if state and state.active is not None else None
    return view.entry(name, version).config


def is_ready(view: ClusterView, name: str, version: int | None) -> bool:
    """Whether a live worker serves ``version`` (``None``: the active one); ``ModelNotFound``
    for a model or version the repository lacks."""
    if version is None:
        view.repository.versions(name)
        state = view.models.get(name)
        version = state.active if state else None
    else:
        view.repository.get(name, version)
    return version is not None and bool(view.serving(name, version))


def metadata(config: ModelConfig, versions: list[int]) -> dict[str, Any]:
    """The protocol's model metadata."""
    def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": shape_of(s)}
                for s in specs]

    return {"name": config.name, "versions": [str(v) for v in versions],
            "platform": PLATFORMS[config.format], "inputs": tensors(config.signature.inputs),
            "outputs": tensors(config.signature.outputs)}


def config_of(config: ModelConfig) -> dict[str, Any]:
    """Triton's model configuration (its JSON form): dims without the batch dimension."""
    def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name,
                 "data_type": _TRITON_TYPE.get(s.dtype, f"TYPE_{datatype_of(s.dtype)}"),
                 "dims": [d if isinstance(d, int) else -1 for d in s.shape if d != BATCH]}
                for s in specs]

    return {
        "name": config.name,
        "platform": PLATFORMS[config.format],
        "backend": _BACKENDS[config.format],
        "max_batch_size": config.batching.max_batch_size,
        "input": tensors(config.signature.inputs),
        "output": tensors(config.signature.outputs),
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(config.batching.max_batch_latency_ms * 1000)},
        "instance_group": [{"count": config.concurrency.max_concurrency,
                            "kind": "KIND_GPU" if config.device == "cuda" else "KIND_AUTO"}],
    }


def repository_index(view: ClusterView) -> list[dict[str, str]]:
    """Every model version of the repository: its state (READY, LOADING, UNAVAILABLE) and why."""
    index = []
    repository = view.repository
    for name in repository.names():
        state = view.models.get(name)
        for version in sorted(repository.versions(name)):
            serving = bool(view.serving(name, version))
            wanted = state is not None and version in state.desired
            failed = None if serving or not wanted else view.load_failure(name, version)
            index.append({"name": name, "version": str(version),
                          "state": "READY" if serving else
                          ("LOADING" if wanted and not failed else "UNAVAILABLE"),
                          "reason": failed or ("" if serving or wanted else "unloaded")})
    return index


async def load_with_parameters(admin: AdminService, view: ClusterView, name: str,
                               parameters: Mapping[str, object]) -> None:
    """Triton's repository load: the newest version, with the configuration that
    ``parameters["config"]`` (Triton's JSON, ``common.model.triton_config``) asks, else as its
    model.yaml says. ``file:<version>/<path>`` parameters (model files) are refused unless
    ``INFERNO_ALLOW_MODEL_FILES`` allows them: then they are a new version
    (``facade.model_files``), and that one loads. Any other parameter is refused, as Triton
    does."""
    files = {k: v for k, v in parameters.items() if k.startswith(FILE_PREFIX)}
    for key in parameters:
        if key in files and not admin.allow_model_files:
            raise InvalidInput(_files_refused(key))
        if key not in files and key != "config":
            raise InvalidInput(f"Unrecognized load parameter '{key}': a load takes 'config' "
                               f"(Triton's model configuration, JSON)")
    text = parameters.get("config")
    if text is not None and not isinstance(text, str):
        raise InvalidInput(f"parameters.config must be a string (Triton's model configuration "
                           f"as JSON), not {type(text).__name__}")
    # A config the new version refuses answers 400 with that version written: it stays, unloaded.
    version = await admin.add_version(name, files) if files else None
    base = view.repository.get(name, version).config
    override = "" if text is None else override_from_triton(text, base, config_of(base))
    await admin.load(name, base.version, override)


def _files_refused(key: str) -> str:
    return (f"parameters.{key}: file overrides (model files in the load request) are "
            f"refused: a model file is code; set INFERNO_ALLOW_MODEL_FILES=true to allow them")


async def unload_every_version(admin: AdminService, view: ClusterView, name: str) -> None:
    """Unload every loaded version; a model loaded nowhere is a success, as in Triton."""
    state = view.models.get(name)
    if state is None or not state.desired:
        view.repository.versions(name)  # ModelNotFound for a name nobody knows
        return
    await admin.unload(name, None)
