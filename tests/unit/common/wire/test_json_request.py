"""The JSON request body (common/wire/json_request.py) that HTTP v1 clients and producers share."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from common.errors import InvalidInput
from common.model.dtypes import float_to_bf16_bits
from common.wire.json_request import decode_json_inputs, parse_json_object
from tests.unit.common.wire.frames import assert_same
from tests.unit.common.wire.signature import SIGNATURE


def json_body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def read(body: bytes) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """What a v1 HTTP body or a JSON queue message decodes to."""
    return decode_json_inputs(parse_json_object(body), SIGNATURE)


def test_json_body_in_the_v1_request_shape() -> None:
    x = np.array([[1, 2], [3, 4]], np.float32)
    body = json_body(inputs={"x": {"b64": base64.b64encode(x.tobytes()).decode(),
                                   "shape": [2, 2], "dtype": "float32"},
                             "h": {"data": [1.0, -2.5]},
                             "mask": {"data": [True, True, False, True], "shape": [2, 2]}},
                     outputs=["z"], timeout_ms=50, codec="base64")
    arrays, outputs = read(body)
    assert_same(arrays["x"], x)
    assert_same(arrays["h"], float_to_bf16_bits([1.0, -2.5]))
    assert_same(arrays["mask"], np.array([[True, True], [False, True]]))
    assert outputs == ["z"]
    assert SIGNATURE.check_inputs(arrays) == 2


@pytest.mark.parametrize("outputs", [None, []])
def test_json_body_without_an_output_selection_means_every_output(outputs: Any) -> None:
    fields: dict[str, Any] = {"inputs": {"x": {"data": [[1, 2]]}, "h": {"data": [0.5]}}}
    if outputs is not None:
        fields["outputs"] = outputs
    assert read(orjson.dumps(fields))[1] is None


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "Request body is not valid JSON"),
    (b"[1]", "Request body must be a JSON object"),
    (json_body(), "'inputs' must be an object"),
    (json_body(inputs={}), "Missing required input(s): h, x. Expected inputs: h, mask, x"),
    (json_body(inputs=[{"data": [1]}]), "'inputs' must be an object"),
    (json_body(inputs={"x": {"data": [[1, 2]]}}), "Missing required input(s): h"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1]}, "w": {"data": [1]}}),
     "Unexpected input(s): w"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1], "b64": "AA=="}}),
     "Input 'h': give exactly one of 'data' or 'b64'"),
    (json_body(inputs={"x": {"data": [[1, 2]], "dtype": "float64"}, "h": {"data": [1]}}),
     "Input 'x': expected dtype float32, got float64"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1]}}, outputs="y"),
     "'outputs' must be a list of output names"),
    (json_body(inputs={"x": {"data": [[1, 2]]}, "h": {"data": [1]}}, outputs=["y", 1]),
     "'outputs' must be a list of output names"),
])
def test_json_body_errors_are_invalid_input(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        read(body)
    assert message in str(info.value)
