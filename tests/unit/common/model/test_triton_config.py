"""Triton's model configuration read as a model.yaml override (common/model/triton_config.py),
against the sample mlp version 2 (greedy batching, 64 rows, 5 ms) as the repository has it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.errors import InvalidInput
from common.model.config import BatchWait, Device, ModelConfig
from common.model.repository import ModelRepository
from common.model.triton_config import override_from_triton
from facade.v2_models import config_of

MODELS = Path(__file__).resolve().parents[4] / "models"


@pytest.fixture(scope="module")
def mlp() -> ModelConfig:
    repository = ModelRepository(MODELS)
    repository.scan()
    return repository.get("mlp", 2).config


def override(mlp: ModelConfig, config: dict[str, Any] | str) -> str:
    text = config if isinstance(config, str) else json.dumps(config)
    return override_from_triton(text, mlp, config_of(mlp))


def refusal(mlp: ModelConfig, config: dict[str, Any] | str) -> str:
    with pytest.raises(InvalidInput) as raised:
        override(mlp, config)
    return raised.value.message


def test_batch_size_and_delay_become_a_fill_wait(mlp: ModelConfig) -> None:
    text = override(mlp, {"max_batch_size": 4,
                          "dynamic_batching": {"max_queue_delay_microseconds": 2000}})
    assert orjson.loads(text) == {"batching": {"max_batch_size": 4, "max_batch_latency_ms": 2.0,
                                               "wait": "fill"}}
    loaded = mlp.with_override(text)
    assert (loaded.batching.max_batch_size, loaded.batching.max_batch_latency_ms,
            loaded.batching.wait) == (4, 2.0, BatchWait.FILL)
    assert loaded.signature == mlp.signature and loaded.queue == mlp.queue
    # What the server then shows is what was asked.
    shown = config_of(loaded)
    assert shown["max_batch_size"] == 4
    assert shown["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}


def test_the_same_configuration_twice_is_the_same_override(mlp: ModelConfig) -> None:
    asked = {"instance_group": [{"count": 2}], "max_batch_size": 8}
    again = dict(reversed(list(asked.items())))
    assert override(mlp, asked) == override(mlp, again) == (
        '{"batching":{"max_batch_size":8},"concurrency":{"max_concurrency":2}}')


@pytest.mark.parametrize("form", ["rest", "grpc"])
def test_the_configuration_the_server_shows_loads_unchanged(mlp: ModelConfig,
                                                            form: str) -> None:
    shown = config_of(mlp)
    if form == "grpc":  # protobuf's JSON form: 64-bit integers as strings
        shown = {**shown, "dynamic_batching": {"max_queue_delay_microseconds": "5000"},
                 "input": [{**t, "dims": [str(d) for d in t["dims"]]} for t in shown["input"]]}
    assert override(mlp, shown) == ""
    assert override(mlp, {}) == ""


def test_a_delay_of_zero_is_greedy_batching(mlp: ModelConfig) -> None:
    filled = mlp.with_override(override(mlp, {"dynamic_batching": {
        "max_queue_delay_microseconds": 700}}))
    assert filled.batching.wait is BatchWait.FILL
    for asked in ({"dynamic_batching": {}},
                  {"dynamic_batching": {"max_queue_delay_microseconds": 0}}):
        loaded = mlp.with_override(override(mlp, asked))
        assert loaded.batching.wait is BatchWait.GREEDY
        assert config_of(loaded)["dynamic_batching"] == {"max_queue_delay_microseconds": 0}


def test_an_instance_group_sets_concurrency_and_device(mlp: ModelConfig) -> None:
    loaded = mlp.with_override(override(mlp, {"instance_group": [{"count": 3,
                                                                 "kind": "KIND_GPU"}]}))
    assert (loaded.concurrency.max_concurrency, loaded.device) == (3, Device.CUDA)
    assert config_of(loaded)["instance_group"] == [{"count": 3, "kind": "KIND_GPU"}]
    cpu = mlp.with_override(override(mlp, {"instance_group": [{"kind": "KIND_CPU"}]}))
    assert cpu.device is Device.CPU


@pytest.mark.parametrize(("config", "expected"), [
    ("{not json", "parameters.config is not valid JSON"),
    ("[1, 2]", "parameters.config must be a JSON object"),
    ({"sequence_batching": {}}, "parameters.config: unsupported field 'sequence_batching'"),
    ({"dynamic_batching": {"preferred_batch_size": [4]}},
     "unsupported field 'dynamic_batching.preferred_batch_size'"),
    ({"dynamic_batching": []}, "parameters.config.dynamic_batching must be an object"),
    ({"instance_group": [{"count": 1, "gpus": [0]}]},
     "unsupported field 'instance_group[0].gpus'"),
    ({"instance_group": [{"count": 1}, {"count": 1}]},
     "parameters.config.instance_group must be a list of one group"),
    ({"instance_group": [{"kind": "KIND_MODEL"}]}, "parameters.config.instance_group[0].kind"),
    ({"instance_group": [{"count": 65}]}, "parameters.config.instance_group[0].count: 65 is "
                                          "refused (model.yaml's concurrency.max_concurrency"),
    ({"max_batch_size": 0}, "parameters.config.max_batch_size: 0 is refused (model.yaml's "
                            "batching.max_batch_size: Input should be greater than or equal to 1"),
    ({"max_batch_size": 65537}, "parameters.config.max_batch_size: 65537 is refused"),
    ({"max_batch_size": "four"}, "parameters.config.max_batch_size must be an integer"),
    ({"max_batch_size": True}, "parameters.config.max_batch_size must be an integer"),
    ({"max_batch_size": 4.5}, "parameters.config.max_batch_size must be an integer"),
    ({"dynamic_batching": {"max_queue_delay_microseconds": 61_000_000}},
     "parameters.config.dynamic_batching.max_queue_delay_microseconds: 61000000 is refused "
     "(model.yaml's batching.max_batch_latency_ms"),
    ({"dynamic_batching": {"max_queue_delay_microseconds": -1}},
     "parameters.config.dynamic_batching.max_queue_delay_microseconds: -1 is refused"),
    ({"name": "other"}, "parameters.config.name is 'other', but the model's is 'mlp'"),
    ({"platform": "onnxruntime_onnx"}, "parameters.config.platform is 'onnxruntime_onnx'"),
    ({"backend": "python"}, "parameters.config.backend is 'python'"),
    ({"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [128]}]},
     "parameters.config.input[0].dims is [128], but input 'x' has [256]: a configuration "
     "cannot change the signature"),
    ({"input": [{"name": "x", "data_type": "TYPE_FP16", "dims": [256]}]},
     "parameters.config.input[0].data_type is 'TYPE_FP16'"),
    ({"input": [{"name": "y", "data_type": "TYPE_FP32", "dims": [256]}]},
     "parameters.config.input[0].name is 'y', not one of the model's inputs (x)"),
    ({"input": [{"name": ["x"]}]}, "parameters.config.input[0].name is ['x']"),
    ({"input": [{"name": "x", "reshape": {"shape": [16, 16]}}]},
     "unsupported field 'input[0].reshape'"),
    ({"output": [{"name": "probs"}]},
     "parameters.config.output names probs, but the model's outputs are probs, label, logits"),
    ({"output": {}}, "parameters.config.output must be a list of tensors"),
    ({"input": [{"name": "x", "dims": 256}]}, "parameters.config.input[0].dims must be a list"),
])
def test_a_malformed_or_unsupported_configuration_names_the_field(
        mlp: ModelConfig, config: dict[str, Any] | str, expected: str) -> None:
    assert expected in refusal(mlp, config)
