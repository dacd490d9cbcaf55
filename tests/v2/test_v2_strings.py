"""BYTES tensors (the ``string`` dtype) in the v2 protocol: JSON data and the binary extension."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from common.errors import InvalidInput
from common.model.config import ModelConfig
from facade.v2_models import config_of
from facade.v2_protocol import V2Call

CONFIG = ModelConfig.model_validate({
    "name": "echo", "version": 1, "format": "python", "entrypoint": "model:create",
    "signature": {"inputs": [{"name": "text", "dtype": "string", "shape": ["batch"]}],
                  "outputs": [{"name": "upper", "dtype": "string", "shape": ["batch"]}]}})


def prefixed(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def call(body: dict[str, Any], binary: bytes = b"") -> V2Call:
    header = orjson.dumps(body)
    v2 = V2Call(header + binary, str(len(header)) if binary else None)
    v2.parse()
    return v2


def test_json_bytes_in_and_out() -> None:
    v2 = call({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                           "data": ["héllo", ""]}]})
    arrays, _ = v2.decode(CONFIG)
    assert arrays["text"].dtype == object and arrays["text"].tolist() == ["héllo", ""]
    response = v2.encode(CONFIG, {"upper": arrays["text"]})
    assert response.header_length is None
    out = orjson.loads(response.body)["outputs"][0]
    assert out == {"name": "upper", "datatype": "BYTES", "shape": [2], "data": ["héllo", ""]}


def test_binary_bytes_in_and_out() -> None:
    raw = prefixed("a", "日本")
    v2 = call({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                           "parameters": {"binary_data_size": len(raw)}}],
               "outputs": [{"name": "upper", "parameters": {"binary_data": True}}]}, raw)
    arrays, _ = v2.decode(CONFIG)
    assert arrays["text"].tolist() == ["a", "日本"]
    response = v2.encode(CONFIG, {"upper": arrays["text"]})
    assert response.header_length is not None
    head = orjson.loads(response.body[:response.header_length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
    assert response.body[response.header_length:] == raw


@pytest.mark.parametrize(("data", "binary", "expected"), [
    (["a", 1], b"", "Input 'text': element 1 is not a string"),
    (None, prefixed("a")[:-1], "element 0 claims 1 bytes, only 0 are left"),
    (None, prefixed("a", "b") + b"x", "bytes follow the last of its 2 elements"),
    (None, struct.pack("<I", 1) + b"\xff" + prefixed("b"), "element 0 is not valid UTF-8"),
])
def test_bad_bytes_are_invalid_input(data: Any, binary: bytes, expected: str) -> None:
    tensor: dict[str, Any] = {"name": "text", "datatype": "BYTES", "shape": [2]}
    if data is None:
        tensor["parameters"] = {"binary_data_size": len(binary)}
    else:
        tensor["data"] = data
    with pytest.raises(InvalidInput, match=expected):
        call({"inputs": [tensor]}, binary).decode(CONFIG)


def test_the_triton_config_names_strings_type_string() -> None:
    config = config_of(CONFIG)
    assert config["input"][0]["data_type"] == "TYPE_STRING"
    assert config["output"][0]["data_type"] == "TYPE_STRING"


def test_a_string_array_is_numpy_object() -> None:
    assert np.dtype(object) == CONFIG.signature.inputs[0].dtype.numpy
