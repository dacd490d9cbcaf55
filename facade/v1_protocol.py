"""The v1 protocol (the original Inferno's API): its JSON request body in, its JSON response out.

``V1`` answers ``POST /v1/models/{name}:predict`` in ``facade.front``: each request becomes a
``V1Call`` for the data plane, its result or its error a JSON answer. Bodies are parsed with
orjson and decoded straight to numpy (``common.wire.json_request``, the same reader workers use
for JSON queue messages); responses are encoded once by orjson, numpy arrays included.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
import orjson

from common.errors import InfernoError, InvalidInput, InvalidJson
from common.model.codecs import Codec, encode_tensor
from common.model.config import ModelConfig
from common.wire.json_request import decode_json_inputs, parse_json_object
from facade.errors import JSON_HEADER, error_answer, v1_error
from facade.protocol import Answer, Headers, positive, version_of

__all__ = ["ROUTE", "V1", "V1Call", "V1Protocol"]

Array = npt.NDArray[Any]
ROUTE = "v1"
_JSON = (JSON_HEADER,)


def _codec_of(body: dict[str, Any], default: Codec) -> Codec:
    codec = body.get("codec")
    if codec is None:
        return default
    try:
        return Codec(codec)
    except ValueError:
        raise InvalidInput(f"Unknown codec {codec!r}; use one of: "
                           f"{', '.join(c.value for c in Codec)}") from None


class V1Call:
    """One v1 predict body; see ``facade.protocol.ProtocolCall``."""

    __slots__ = ("_body", "_codec", "_raw")
    route = ROUTE

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._body: dict[str, Any] = {}
        self._codec = Codec.JSON

    def parse(self) -> tuple[int | None, float | None]:
        self._body = parse_json_object(self._raw, InvalidJson)
        version = self._body.get("version")
        return (None if version is None else version_of(version, "version"),
                positive(self._body.get("timeout_ms"), "'timeout_ms'"))

    def decode(self, config: ModelConfig) -> tuple[dict[str, Array], list[str] | None]:
        decoded = decode_json_inputs(self._body, config.signature)
        self._codec = _codec_of(self._body, config.codecs.default)
        return decoded

    def encode(self, config: ModelConfig, outputs: dict[str, Array]) -> bytes:
        dtypes = config.signature.output_dtypes
        return orjson.dumps(
            {"model": config.name, "version": config.version,
             "outputs": {n: encode_tensor(a, dtypes[n], self._codec) for n, a in outputs.items()}},
            option=orjson.OPT_SERIALIZE_NUMPY)


class V1Protocol:
    """v1 over HTTP; see ``facade.protocol.HttpProtocol``."""

    __slots__ = ()
    name = ROUTE

    def call(self, body: bytes, headers: Headers) -> V1Call:
        return V1Call(body)

    def answer(self, result: bytes) -> Answer:
        return 200, result, _JSON

    def refuse(self, error: InfernoError) -> Answer:
        return error_answer(error, v1_error)


V1 = V1Protocol()
