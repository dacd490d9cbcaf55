"""The JSON request body of the HTTP v1 API, which producers may also put on the queues.

``{"inputs": {name: {"data"|"b64"|"base64", "shape"?, "dtype"?}}, "outputs": [...]?, ...}``:
the facade's v1 adapter and the worker's decoding of JSON queue messages read it with the same
``decode_json_inputs``; the HTTP-only fields (``version``, ``codec``, ``timeout_ms``) are the v1
adapter's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
import orjson

from common.errors import InvalidInput
from common.model.codecs import decode_tensor
from common.model.signature import Signature

__all__ = ["decode_json_inputs", "parse_json_object"]

Array = npt.NDArray[Any]


def parse_json_object(raw: bytes | bytearray | memoryview,
                      malformed: type[InvalidInput] = InvalidInput) -> dict[str, Any]:
    """A body that must be one JSON object (HTTP bodies, v2 JSON headers, JSON queue messages).

    ``malformed`` is raised for a body that is not JSON at all: the HTTP adapters pass
    ``InvalidJson`` (400); queue messages keep ``InvalidInput``, the contract's ``invalid_input``.
    orjson refuses nesting deeper than 1024 levels, so no input reaches Python's recursion limit.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise malformed(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("Request body must be a JSON object")
    return body


def decode_json_inputs(body: Mapping[str, Any], signature: Signature
                       ) -> tuple[dict[str, Array], list[str] | None]:
    """The inputs and the output selection of a parsed v1 body.

    Input names are checked before any data is decoded; ``outputs`` absent, null or ``[]`` means
    every output (their names are checked with the rest, by ``Signature.validate_request``).
    """
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise InvalidInput("'inputs' must be an object mapping input names to tensors")
    signature.check_input_names(inputs)
    specs = signature.input_specs
    arrays = {name: decode_tensor(name, payload, specs[name].dtype)
              for name, payload in inputs.items()}
    outputs = body.get("outputs")
    if outputs is not None and not (
            isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)):
        raise InvalidInput("'outputs' must be a list of output names")
    return arrays, outputs or None
