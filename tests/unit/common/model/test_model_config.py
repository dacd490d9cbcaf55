"""The model.yaml schema: defaults, format rules, bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from common.model.codecs import Codec
from common.model.config import BatchWait, Device, ModelConfig, ModelFormat

SIGNATURE = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]}


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "m", "version": 1, "format": "python",
                            "entrypoint": "model:create", "signature": SIGNATURE}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def error_fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        ModelConfig.model_validate(data)
    return [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


def test_defaults() -> None:
    config = ModelConfig.model_validate(raw())
    assert config.format is ModelFormat.PYTHON
    assert config.batching.max_batch_size == 32
    assert config.batching.max_batch_latency_ms == 5.0
    assert config.batching.wait is BatchWait.GREEDY
    assert config.concurrency.max_concurrency == 1
    assert config.codecs.default is Codec.JSON
    assert config.queue.max_length == 1024
    assert config.device is None and config.timeout_ms is None
    assert config.warmup is True


def test_every_section_parses() -> None:
    config = ModelConfig.model_validate(raw(
        batching={"max_batch_size": 8, "max_batch_latency_ms": 2.5, "wait": "fill"},
        concurrency={"max_concurrency": 4}, codecs={"default": "base64"}, device="cuda",
        queue={"max_length": 10}, timeout_ms=250, warmup=False))
    assert config.batching.wait is BatchWait.FILL and config.batching.max_batch_size == 8
    assert config.concurrency.max_concurrency == 4
    assert config.codecs.default is Codec.BASE64
    assert config.device is Device.CUDA
    assert config.queue.max_length == 10 and config.timeout_ms == 250 and not config.warmup


def test_torchscript_needs_an_artifact() -> None:
    with pytest.raises(ValidationError, match="format torchscript needs 'artifact'"):
        ModelConfig.model_validate(raw(format="torchscript", entrypoint=None))
    config = ModelConfig.model_validate(raw(format="torchscript", entrypoint=None,
                                            artifact="model.pt"))
    assert config.artifact == "model.pt"


def test_python_needs_an_entrypoint() -> None:
    with pytest.raises(ValidationError, match="format python needs 'entrypoint'"):
        ModelConfig.model_validate(raw(entrypoint=None))


@pytest.mark.parametrize("entrypoint", ["model", "model:", ":create", "model:create:x",
                                        "my-model:create", "model:1create"])
def test_entrypoint_must_look_like_module_colon_factory(entrypoint: str) -> None:
    with pytest.raises(ValidationError, match="entrypoint must look like 'module:factory'"):
        ModelConfig.model_validate(raw(entrypoint=entrypoint))


@pytest.mark.parametrize("entrypoint", ["model:create", "pkg.sub.mod:make_model", "_m:_f"])
def test_good_entrypoints(entrypoint: str) -> None:
    assert ModelConfig.model_validate(raw(entrypoint=entrypoint)).entrypoint == entrypoint


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": "bad name"}, "name"),
    ({"name": "-lead"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"version": 0}, "version"),
    ({"format": "tensorrt"}, "format"),
    ({"device": "tpu"}, "device"),
    ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size"),
    ({"batching": {"max_batch_latency_ms": -1}}, "batching.max_batch_latency_ms"),
    ({"batching": {"wait": "sometimes"}}, "batching.wait"),
    ({"batching": {"max_batch_sise": 4}}, "batching.max_batch_sise"),
    ({"concurrency": {"max_concurrency": 0}}, "concurrency.max_concurrency"),
    ({"concurrency": {"max_concurrency": 65}}, "concurrency.max_concurrency"),
    ({"queue": {"max_length": 0}}, "queue.max_length"),
    ({"codecs": {"default": "msgpack"}}, "codecs.default"),
    ({"timeout_ms": 0}, "timeout_ms"),
    ({"batchng": {}}, "batchng"),
    ({"signature": {"inputs": [{"name": "x", "dtype": "float8", "shape": ["batch"]}],
                    "outputs": SIGNATURE["outputs"]}}, "signature.inputs.0.dtype"),
])
def test_bad_values_name_their_field(overrides: dict[str, Any], field: str) -> None:
    assert field in error_fields(raw(**overrides))


def test_is_frozen() -> None:
    config = ModelConfig.model_validate(raw())
    with pytest.raises(ValidationError):
        config.version = 2  # type: ignore[misc]


def test_describe_is_public_metadata_without_paths() -> None:
    config = ModelConfig.model_validate(raw(batching={"max_batch_size": 8}))
    described = config.describe()
    assert described == {
        "name": "m", "version": 1, "format": "python",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4], "optional": False}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"], "optional": False}],
        "batching": {"max_batch_size": 8, "max_batch_latency_ms": 5.0, "wait": "greedy"},
        "max_concurrency": 1, "default_codec": "json", "queue_max_length": 1024,
    }
