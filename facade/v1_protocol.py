"""The v1 predict adapter: v1 JSON body in, v1 JSON body out, one ``PredictService`` in between.

Bodies are parsed with orjson and decoded straight to numpy (no pydantic model of tensor data);
replies are encoded once by orjson, numpy arrays included.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from common.errors import InfernoError, InvalidInput
from common.logging import request_id_var
from common.model.codecs import Codec, decode_tensor, encode_tensor, parse_json_object
from facade.data_plane import PredictService

__all__ = ["V1Predict"]

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


class V1Predict:
    def __init__(self, service: PredictService) -> None:
        self._service = service

    async def __call__(self, name: str, version: int | None, raw: bytes) -> bytes:
        """Answer one v1 predict body with the v1 response body (or raise ``InfernoError``)."""
        started = time.perf_counter()
        service = self._service
        try:
            body = parse_json_object(raw)
            config = service.resolve(name, version if version is not None
                                     else _version_of(body)).config
            signature = config.signature
            inputs = body.get("inputs")
            if not isinstance(inputs, dict) or not inputs:
                raise InvalidInput("'inputs' must be an object mapping input names to tensors")
            signature.check_input_names(inputs)
            specs = signature.input_specs
            arrays = {n: decode_tensor(n, p, specs[n].dtype) for n, p in inputs.items()}
            outputs = body.get("outputs")
            if outputs is not None and not (
                    isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)):
                raise InvalidInput("'outputs' must be a list of output names")
            codec = _codec_of(body, config.codecs.default)
            result = await service.infer(config, arrays, outputs,
                                         service.deadline_s(config, body.get("timeout_ms")),
                                         request_id_var.get())
        except InfernoError as exc:
            service.observe(name, ROUTE, started, exc)
            raise
        dtypes = signature.output_dtypes
        response = orjson.dumps(
            {"model": name, "version": config.version,
             "outputs": {n: encode_tensor(a, dtypes[n], codec) for n, a in result.items()}},
            option=orjson.OPT_SERIALIZE_NUMPY)
        service.observe(name, ROUTE, started)
        return response
