"""The Open Inference Protocol v2 (KServe) infer protocol, with Triton's binary tensor extension.

``V2`` answers ``POST /v2/models/{name}/infer`` in ``facade.front``: each request becomes a
``V2Call`` for the data plane, its result a ``V2Response`` (JSON, or JSON then binary outputs) and
its error the protocol's JSON.

A JSON request names each input's ``datatype`` and ``shape`` with ``data`` (flat row-major or
nested), or, with the binary extension, ``parameters.binary_data_size``: the bytes follow the JSON
header (its length in the ``Inference-Header-Content-Length`` HTTP header), in input order, and
are read as numpy views on the request body, never copied or parsed as numbers. ``BYTES`` (the
``string`` dtype, UTF-8 text) takes ``data`` as a list of strings, and in binary each element as
a uint32 length and its bytes (common/model/strings.py). Outputs are
returned as JSON ``data`` or, when asked (``binary_data`` per output, ``binary_data_output`` for
all), as raw bytes after the JSON header of the response. With system shared memory
(``facade.shared_memory``) an input's or output's ``shared_memory_region`` parameters name where
its bytes lie instead: such an input has no ``data`` and no binary bytes, such an output is
answered with its region's parameters and no data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
import orjson

from common.errors import InfernoError, InvalidInput, InvalidJson
from common.model.codecs import array_from_raw, check_shape, decode_tensor, json_safe, raw_of
from common.model.config import ModelConfig
from common.model.dtypes import DType
from common.model.signature import Signature
from common.wire.json_request import parse_json_object
from facade.errors import JSON_HEADER, error_answer, v2_error
from facade.protocol import Answer, Headers, positive
from facade.shared_memory import OFF, RegionRef, SharedMemoryRegistry, region_ref

__all__ = ["HEADER_LENGTH", "ROUTE", "V2", "V2Call", "V2Protocol", "V2Response", "datatype_of",
           "dtype_of", "header_length_of"]

Array = npt.NDArray[Any]
ROUTE = "v2"
HEADER_LENGTH = "inference-header-content-length"
_HEADER_LENGTH = HEADER_LENGTH.encode()
_JSON = (JSON_HEADER,)
_OCTETS = (b"content-type", b"application/octet-stream")

_DATATYPES: dict[DType, str] = {
    DType.BOOL: "BOOL", DType.UINT8: "UINT8", DType.UINT16: "UINT16", DType.UINT32: "UINT32",
    DType.UINT64: "UINT64", DType.INT8: "INT8", DType.INT16: "INT16", DType.INT32: "INT32",
    DType.INT64: "INT64", DType.FLOAT16: "FP16", DType.BFLOAT16: "BF16",
    DType.FLOAT32: "FP32", DType.FLOAT64: "FP64", DType.STRING: "BYTES",
}
_DTYPES = {name: dtype for dtype, name in _DATATYPES.items()}


def datatype_of(dtype: DType) -> str:
    """The protocol's name of a dtype (``FP32`` for float32)."""
    return _DATATYPES[dtype]


def dtype_of(datatype: Any, name: str) -> DType:
    try:
        return _DTYPES[datatype]
    except (KeyError, TypeError):
        known = ", ".join(_DATATYPES.values())
        raise InvalidInput(f"Input '{name}': unsupported datatype {datatype!r} "
                           f"(supported: {known})") from None


@dataclass(frozen=True, slots=True)
class V2Response:
    body: bytes
    header_length: int | None
    """Length of the JSON header when binary outputs follow it."""


def header_length_of(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` HTTP header: absent, or a number of bytes."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):  # "²" is a digit to str.isdigit
        raise InvalidInput(f"{HEADER_LENGTH} must be a number of bytes, got {value!r}")
    return int(value)


class V2Call:
    """One v2 infer request; see ``facade.protocol.ProtocolCall``."""

    __slots__ = ("_binary", "_body", "_header", "_places", "_raw", "_shm", "_split")
    route = ROUTE

    def __init__(self, raw: bytes, header_length: str | None,
                 shared_memory: SharedMemoryRegistry = OFF) -> None:
        self._raw = raw
        self._header = header_length
        self._shm = shared_memory
        self._body: dict[str, Any] = {}
        self._split = 0
        self._binary: dict[str, bool] = {}
        self._places: dict[str, RegionRef] = {}
        """The outputs asked for in shared memory, and where."""

    def parse(self) -> tuple[int | None, float | None]:
        raw = self._raw
        header_length = header_length_of(self._header)
        if header_length is not None and not 0 < header_length <= len(raw):
            raise InvalidInput(f"{HEADER_LENGTH} {header_length} does not fit a body of "
                               f"{len(raw)} bytes")
        self._split = len(raw) if header_length is None else header_length
        self._body = parse_json_object(raw[:self._split], InvalidJson)
        if not isinstance(self._body.get("id", ""), str):
            raise InvalidInput("'id' must be a string")
        return None, _timeout_ms(_parameters(self._body, "the request"))

    def decode(self, config: ModelConfig) -> tuple[dict[str, Array], list[str] | None]:
        arrays = _decode_inputs(self._body, config.signature, memoryview(self._raw)[self._split:],
                                self._shm)
        wanted, self._binary, self._places = _requested_outputs(self._body)
        for name, place in self._places.items():
            self._shm.check_output(name, place)
        return arrays, wanted

    def encode(self, config: ModelConfig, outputs: dict[str, Array]) -> V2Response:
        dtypes = config.signature.output_dtypes
        written = self._shm.write_outputs(self._places, outputs, dtypes)
        placed = {name: self._places[name].answered(size) for name, size in written.items()}
        return _encode(config.name, config.version, self._body.get("id"), outputs, dtypes,
                       self._binary, placed)


class V2Protocol:
    """v2 over HTTP; see ``facade.protocol.HttpProtocol``. Its calls read and write the regions
    of ``shared_memory`` (``OFF``: they refuse the shared memory parameters)."""

    __slots__ = ("_shm",)
    name = ROUTE

    def __init__(self, shared_memory: SharedMemoryRegistry = OFF) -> None:
        self._shm = shared_memory

    def call(self, body: bytes, headers: Headers) -> V2Call:
        header_length = None
        for key, value in headers:
            if key == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
        return V2Call(body, header_length, self._shm)

    def answer(self, result: V2Response) -> Answer:
        if result.header_length is None:
            return 200, result.body, _JSON
        return 200, result.body, (_OCTETS, (_HEADER_LENGTH, b"%d" % result.header_length))

    def refuse(self, error: InfernoError) -> Answer:
        return error_answer(error, v2_error)


V2 = V2Protocol()


def _decode_inputs(body: dict[str, Any], signature: Signature, binary: memoryview,
                   shared_memory: SharedMemoryRegistry) -> dict[str, Array]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise InvalidInput("'inputs' must be a list of tensors")
    names = [i.get("name") for i in inputs]
    strings = [n for n in names if isinstance(n, str)]  # a list as a name is not hashable
    if len(set(strings)) != len(strings):
        raise InvalidInput("Each input may be given only once")
    signature.check_input_names(strings)
    if len(strings) != len(names):
        raise InvalidInput("Every input needs a 'name' (a string)")
    specs = signature.input_specs
    arrays: dict[str, Array] = {}
    offset = 0
    for tensor in inputs:
        name = tensor["name"]
        spec = specs[name]
        dtype = dtype_of(tensor.get("datatype"), name)
        if dtype is not spec.dtype:
            raise InvalidInput(f"Input '{name}': expected datatype {datatype_of(spec.dtype)}, "
                               f"got {datatype_of(dtype)}")
        shape = check_shape(f"Input '{name}'", tensor.get("shape"))
        parameters = _parameters(tensor, f"input '{name}'")
        size = parameters.get("binary_data_size")
        place = region_ref(f"Input '{name}'", parameters)
        if place is not None:
            if size is not None or "data" in tensor:
                raise InvalidInput(f"Input '{name}': give shared memory, 'data' or "
                                   f"binary_data_size, only one")
            arrays[name] = shared_memory.read_input(name, place, dtype, shape)
            continue
        if size is None:
            if "data" not in tensor:
                raise InvalidInput(f"Input '{name}': give 'data' or binary_data_size")
            arrays[name] = decode_tensor(name, {"data": tensor["data"], "shape": shape}, dtype)
            continue
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidInput(f"Input '{name}': binary_data_size must be an integer")
        if dtype is DType.STRING:
            if offset + size > len(binary):
                raise InvalidInput(f"Input '{name}': binary_data_size is {size} with "
                                   f"{len(binary) - offset} bytes left in the body")
        elif size != (expected := math.prod(shape) * dtype.numpy.itemsize) or (
                offset + size > len(binary)):
            raise InvalidInput(
                f"Input '{name}': shape {shape} of {datatype_of(dtype)} needs {expected} bytes; "
                f"binary_data_size is {size} with {len(binary) - offset} bytes left in the body")
        arrays[name] = array_from_raw(name, binary[offset:offset + size], dtype, shape)
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any "
                           f"input's binary_data_size")
    return arrays


def _requested_outputs(body: dict[str, Any]
                       ) -> tuple[list[str] | None, dict[str, bool], dict[str, RegionRef]]:
    """The outputs asked for (``None``: all), which of them go binary and which into shared
    memory."""
    all_binary = bool(_parameters(body, "the request").get("binary_data_output", False))
    outputs = body.get("outputs")
    if outputs is None:
        return None, {"*": all_binary}, {}
    if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    binary: dict[str, bool] = {}
    places: dict[str, RegionRef] = {}
    for output in outputs:
        name = output["name"]
        parameters = _parameters(output, f"output '{name}'")
        binary[name] = bool(parameters.get("binary_data", all_binary))
        place = region_ref(f"Output '{name}'", parameters)
        if place is not None:
            places[name] = place
    return [o["name"] for o in outputs], binary, places


def _parameters(holder: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {where} must be an object")
    return parameters


def _timeout_ms(parameters: Mapping[str, Any]) -> float | None:
    """Triton clients send ``timeout`` in microseconds."""
    timeout = positive(parameters.get("timeout"), "parameter 'timeout'", " of microseconds")
    return None if timeout is None else timeout / 1000


def _encode(name: str, version: int, request_id: Any, result: dict[str, Array],
            dtypes: Mapping[str, DType], binary: dict[str, bool],
            placed: Mapping[str, dict[str, str | int]]) -> V2Response:
    """The response; ``placed``: the parameters of the outputs written into shared memory."""
    outputs: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for output, array in result.items():
        dtype = dtypes[output]
        entry: dict[str, Any] = {"name": output, "datatype": datatype_of(dtype),
                                 "shape": list(array.shape)}
        if output in placed:
            entry["parameters"] = placed[output]
        elif binary.get(output, binary.get("*", False)):
            raw = raw_of(array, dtype, f"output '{output}'")
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = (array.reshape(-1).tolist() if dtype is DType.STRING
                             else json_safe(array, dtype).reshape(-1))
        outputs.append(entry)
    head: dict[str, Any] = {"model_name": name, "model_version": str(version),
                            "outputs": outputs}
    if request_id is not None:
        head["id"] = request_id
    header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return V2Response(header, None)
    return V2Response(b"".join([header, *buffers]), len(header))
