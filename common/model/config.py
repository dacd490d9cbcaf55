"""The schema of ``model.yaml``: one model version's artifact, signature and serving knobs."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.model.codecs import Codec
from common.model.dtypes import DType
from common.model.embeddings import EmbeddingsConfig
from common.model.signature import Signature

__all__ = [
    "BatchWait",
    "BatchingConfig",
    "CodecConfig",
    "ConcurrencyConfig",
    "Device",
    "ModelConfig",
    "ModelFormat",
    "QueueConfig",
]

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ModelFormat(StrEnum):
    TORCHSCRIPT = "torchscript"
    PYTHON = "python"
    ONNX = "onnx"


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"


class BatchWait(StrEnum):
    GREEDY = "greedy"
    """Run as soon as a runner slot is free, with what has arrived (no added latency)."""
    FILL = "fill"
    """Wait up to ``max_batch_latency_ms`` for a full batch (pays off on GPUs)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchingConfig(_Section):
    max_batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    """Most rows one batch holds; a request with more rows is refused (422)."""
    max_batch_latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 5.0
    """``wait: fill``: how long the first request of a batch waits for others at most. Greedy
    batching never waits for more requests, so it does not use it."""
    wait: BatchWait = BatchWait.GREEDY


class ConcurrencyConfig(_Section):
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    """Batches of this model version running at once (threads)."""


class CodecConfig(_Section):
    default: Codec = Codec.JSON
    """How outputs are encoded when a request does not ask."""


class QueueConfig(_Section):
    max_length: Annotated[int, Field(ge=1)] = 1024
    """Requests waiting in the model's queue before new ones are refused with 503."""


class ModelConfig(_Section):
    """One ``models/<name>/<version>/model.yaml``."""

    name: Annotated[str, Field(pattern=MODEL_NAME)]
    version: Annotated[int, Field(ge=1)]
    format: ModelFormat
    artifact: str | None = None
    """File next to model.yaml (TorchScript, ONNX)."""
    entrypoint: str | None = None
    """``module:factory`` (Python); the module is looked up next to model.yaml first."""
    signature: Signature
    batching: BatchingConfig = BatchingConfig()
    concurrency: ConcurrencyConfig = ConcurrencyConfig()
    codecs: CodecConfig = CodecConfig()
    device: Device | None = None
    """Overrides ``INFERNO_DEVICE`` for this model."""
    queue: QueueConfig = QueueConfig()
    timeout_ms: Annotated[int, Field(ge=1)] | None = None
    """Default request deadline; overrides ``INFERNO_REQUEST_TIMEOUT_MS``."""
    warmup: bool = True
    """Run one batch of zeros through the model when it loads."""
    embeddings: EmbeddingsConfig | None = None
    """The tensors that serve the OpenAI embeddings API (``common.model.embeddings``)."""

    @model_validator(mode="after")
    def _artifact_matches_format(self) -> ModelConfig:
        if self.format is ModelFormat.TORCHSCRIPT and not self.artifact:
            raise ValueError("format torchscript needs 'artifact' (the .pt file)")
        if self.format is ModelFormat.ONNX and not self.artifact:
            raise ValueError("format onnx needs 'artifact' (the .onnx file)")
        if self.format is ModelFormat.TORCHSCRIPT:
            strings = [s.name for s in (*self.signature.inputs, *self.signature.outputs)
                       if s.dtype is DType.STRING]
            if strings:
                raise ValueError("TorchScript models take numeric tensors only: "
                                 f"{', '.join(strings)} (string) need format python")
        if self.format is ModelFormat.PYTHON:
            if not self.entrypoint:
                raise ValueError("format python needs 'entrypoint' (module:factory)")
            if not _ENTRYPOINT.match(self.entrypoint):
                raise ValueError(f"entrypoint must look like 'module:factory', "
                                 f"got {self.entrypoint!r}")
        return self

    @model_validator(mode="after")
    def _embeddings_match_signature(self) -> ModelConfig:
        if self.embeddings is not None:
            self.embeddings.check(self.signature)
        return self

    def with_override(self, override: str) -> ModelConfig:
        """This version as ``override`` (``""``: none) changes it: the JSON of a model.yaml
        fragment (``{"batching": {"max_batch_size": 4}}``), whose sections change only the keys
        they name. Validated as model.yaml is (``ValidationError``)."""
        if not override:
            return self
        fields: dict[str, Any] = {name: getattr(self, name) for name in type(self).model_fields}
        for key, value in orjson.loads(override).items():
            section = fields.get(key)
            fields[key] = ({**section.model_dump(), **value}
                           if isinstance(section, _Section) and isinstance(value, dict)
                           else value)
        return ModelConfig.model_validate(fields)

    def describe(self) -> dict[str, object]:
        """The public metadata of this version (no paths)."""
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format.value,
            "inputs": [s.describe() for s in self.signature.inputs],
            "outputs": [s.describe() for s in self.signature.outputs],
            "batching": self.batching.model_dump(mode="json"),
            "max_concurrency": self.concurrency.max_concurrency,
            "default_codec": self.codecs.default.value,
            "queue_max_length": self.queue.max_length,
        }
