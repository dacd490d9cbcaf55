"""What the Open Inference Protocol says about models, whichever transport asks: metadata,
readiness, Triton's model configuration and repository index, and the repository's unload.

The v2 REST routes (``facade.v2_routes``) and the gRPC servicer (``facade.grpc_server``) answer
from these, so both describe a model in the same words. Each reads the cluster view only.
"""

from __future__ import annotations

from typing import Any

from common.model.config import ModelConfig, ModelFormat
from common.model.dtypes import DType
from common.model.signature import BATCH, TensorSpec
from facade.admin_service import AdminService
from facade.cluster_view import ClusterView
from facade.v2_protocol import datatype_of

__all__ = ["PLATFORMS", "config_of", "is_ready", "metadata", "repository_index", "resolve",
           "shape_of", "unload_every_version"]

PLATFORMS = {ModelFormat.TORCHSCRIPT: "pytorch_libtorch", ModelFormat.PYTHON: "python"}
_TRITON_TYPE = {DType.STRING: "TYPE_STRING"}
"""Where Triton's model configuration names a type otherwise than the protocol (BYTES)."""


def shape_of(spec: TensorSpec) -> list[int]:
    """A tensor's shape in the protocol: -1 for each variable dimension."""
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def resolve(view: ClusterView, name: str, version: int | None) -> ModelConfig:
    """The configuration of ``version`` (``None``: the active one, else the newest);
    ``ModelNotFound`` for a model or version the repository lacks."""
    if version is None:
        state = view.models.get(name)
        version = state.active if state and state.active is not None else None
    return view.repository.get(name, version).config


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
        "backend": "pytorch" if config.format is ModelFormat.TORCHSCRIPT else "python",
        "max_batch_size": config.batching.max_batch_size,
        "input": tensors(config.signature.inputs),
        "output": tensors(config.signature.outputs),
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(config.batching.max_batch_latency_ms * 1000)},
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


async def unload_every_version(admin: AdminService, view: ClusterView, name: str) -> None:
    """Unload every loaded version; a model loaded nowhere is a success, as in Triton."""
    state = view.models.get(name)
    if state is None or not state.desired:
        view.repository.versions(name)  # ModelNotFound for a name nobody knows
        return
    await admin.unload(name, None)
