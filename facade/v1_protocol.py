"""The v1 protocol (the original Inferno's API): its JSON request body in, its JSON response out.

``V1Call`` is what ``facade.front`` hands the data plane for ``POST /v1/models/{name}:predict``.
Bodies are parsed with orjson and decoded straight to numpy (``common.wire.json_request``, the
same reader workers use for JSON queue messages); responses are encoded once by orjson, numpy
arrays included.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
import orjson

from common.errors import InvalidInput, InvalidJson
from common.model.codecs import Codec, encode_tensor
from common.model.config import ModelConfig
from common.wire.json_request import decode_json_inputs, parse_json_object
from facade.data_plane import positive

__all__ = ["ROUTE", "V1Call"]

Array = npt.NDArray[Any]
ROUTE = "v1"


def _version_of(body: dict[str, Any]) -> int | None:
    version = body.get("version")
    if version is None:
        return None
    if isinstance(version, str) and version.isdigit():
        return int(version)
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        return version
    raise InvalidInput("'version' must be a positive integer")


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
    """One v1 predict body; see ``facade.data_plane.ProtocolCall``."""

    __slots__ = ("_body", "_codec", "_raw")
    route = ROUTE

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._body: dict[str, Any] = {}
        self._codec = Codec.JSON

    def parse(self) -> tuple[int | None, float | None]:
        self._body = parse_json_object(self._raw, InvalidJson)
        return _version_of(self._body), positive(self._body.get("timeout_ms"), "'timeout_ms'")

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
