"""The Open Inference Protocol's ``ModelInfer`` over gRPC (Triton's ``inference`` package, the
messages of ``tritonclient.grpc.service_pb2``), as a ``ProtocolCall`` of the data plane.

A ``ModelInferRequest`` gives each input either in ``raw_input_contents`` (one entry per input,
in input order, read as numpy views on the message's bytes; ``BYTES`` as Triton's uint32 length
before each element) or in its typed ``contents`` (``fp32_contents``, ``bytes_contents``, ...),
never both. Outputs are always answered in ``raw_output_contents``, as Triton does. With system
shared memory (``facade.shared_memory``) an input's or requested output's ``shared_memory_region``,
``shared_memory_byte_size`` and ``shared_memory_offset`` parameters name where its bytes lie: such
an input has no entry in ``raw_input_contents`` (the others keep their order), such an output is
answered with those parameters and an empty ``raw_output_contents`` entry (tritonclient reads
the entries by the outputs' positions, as Triton answers them). The version
is the request's ``model_version`` ("": the active one), the timeout the call's gRPC deadline
(or Triton's ``timeout`` parameter, in microseconds, when shorter). Other parameters
(``binary_data_size``, ...) mean nothing over gRPC and are ignored.

``grpc_status``: the gRPC status of an ``InfernoError``, by its HTTP status.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy.typing as npt
from tritonclient.grpc import service_pb2 as pb

from common.errors import InfernoError, InvalidInput
from common.model.codecs import array_from_raw, check_shape, decode_tensor, raw_of
from common.model.config import ModelConfig
from common.model.dtypes import DType
from facade.protocol import positive, version_of
from facade.shared_memory import OFF, RegionRef, SharedMemoryRegistry, region_ref
from facade.v2_protocol import datatype_of, dtype_of

__all__ = ["ROUTE", "GrpcCall", "grpc_status", "parameter_values"]

Array = npt.NDArray[Any]
ROUTE = "grpc"

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENTS = {
    DType.BOOL: "bool_contents", DType.INT8: "int_contents", DType.INT16: "int_contents",
    DType.INT32: "int_contents", DType.INT64: "int64_contents", DType.UINT8: "uint_contents",
    DType.UINT16: "uint_contents", DType.UINT32: "uint_contents",
    DType.UINT64: "uint64_contents", DType.FLOAT32: "fp32_contents",
    DType.FLOAT64: "fp64_contents", DType.STRING: "bytes_contents",
}
"""The typed field of ``InferTensorContents`` that holds each dtype (FP16 and BF16 have none:
they travel raw only)."""


def grpc_status(error: InfernoError) -> Any:
    """The ``grpc.StatusCode`` of ``error``: INTERNAL where no closer one exists."""
    return _STATUS.get(error.status_code, grpc.StatusCode.INTERNAL)


class GrpcCall:
    """One ``ModelInferRequest``; see ``facade.protocol.ProtocolCall``."""

    __slots__ = ("_deadline_ms", "_places", "_request", "_shm")
    route = ROUTE

    def __init__(self, request: Any, deadline_ms: float | None,
                 shared_memory: SharedMemoryRegistry = OFF) -> None:
        self._request = request
        self._deadline_ms = deadline_ms
        """What is left of the call's gRPC deadline, in milliseconds (``None``: none set)."""
        self._shm = shared_memory
        self._places: dict[str, RegionRef] = {}
        """The outputs asked for in shared memory, and where."""

    def parse(self) -> tuple[int | None, float | None]:
        version: str = self._request.model_version
        asked = version_of(version, "model_version") if version else None
        timeout = self._request.parameters.get("timeout")
        micros = None if timeout is None else positive(
            timeout.int64_param, "parameter 'timeout'", " of microseconds")
        limits = [t for t in (self._deadline_ms, None if micros is None else micros / 1000)
                  if t is not None]
        return asked, min(limits) if limits else None

    def decode(self, config: ModelConfig) -> tuple[dict[str, Array], list[str] | None]:
        request = self._request
        names: list[str] = [t.name for t in request.inputs]
        if len(set(names)) != len(names):
            raise InvalidInput("Each input may be given only once")
        config.signature.check_input_names(names)
        places = {t.name: region_ref(f"Input '{t.name}'", parameter_values(t.parameters))
                  for t in request.inputs}
        raw = iter(request.raw_input_contents)
        given = len(request.raw_input_contents)
        plain = sum(p is None for p in places.values())
        if given and given != plain:
            raise InvalidInput(f"raw_input_contents holds {given} tensors for {plain} inputs "
                               f"not in shared memory: give every such input raw, or none")
        specs = config.signature.input_specs
        arrays: dict[str, Array] = {}
        for tensor in request.inputs:
            name = tensor.name
            label = f"Input '{name}'"
            dtype = dtype_of(tensor.datatype, name)
            if dtype is not specs[name].dtype:
                raise InvalidInput(f"{label}: expected datatype {datatype_of(specs[name].dtype)}, "
                                   f"got {datatype_of(dtype)}")
            shape = check_shape(label, list(tensor.shape))
            place = places[name]
            if place is not None:
                if tensor.HasField("contents"):
                    raise InvalidInput(f"{label}: give shared memory or contents, not both")
                arrays[name] = self._shm.read_input(name, place, dtype, shape)
            elif not given:
                arrays[name] = _from_contents(name, tensor.contents, dtype, shape)
            elif tensor.HasField("contents"):
                raise InvalidInput(f"{label}: give raw_input_contents or contents, not both")
            else:
                arrays[name] = array_from_raw(name, next(raw), dtype, shape)
        for output in request.outputs:
            place = region_ref(f"Output '{output.name}'", parameter_values(output.parameters))
            if place is not None:
                self._shm.check_output(output.name, place)
                self._places[output.name] = place
        wanted: list[str] = [o.name for o in request.outputs]
        return arrays, wanted or None

    def encode(self, config: ModelConfig, outputs: dict[str, Array]) -> Any:
        dtypes = config.signature.output_dtypes
        written = self._shm.write_outputs(self._places, outputs, dtypes)
        response = pb.ModelInferResponse(model_name=config.name,
                                         model_version=str(config.version), id=self._request.id)
        for name, array in outputs.items():
            dtype = dtypes[name]
            tensor = response.outputs.add(name=name, datatype=datatype_of(dtype),
                                          shape=array.shape)
            if name in written:
                for key, value in self._places[name].answered(written[name]).items():
                    if isinstance(value, str):
                        tensor.parameters[key].string_param = value
                    else:
                        tensor.parameters[key].int64_param = value
                response.raw_output_contents.append(b"")
            else:
                response.raw_output_contents.append(
                    bytes(raw_of(array, dtype, f"output '{name}'")))
        return response


def parameter_values(parameters: Any) -> dict[str, Any]:
    """A map of ``InferParameter`` (or any message with its ``parameter_choice``) as plain
    values, what a REST request's JSON holds (``None`` for a parameter with none set)."""
    values = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(value, choice)
    return values


def _from_contents(name: str, contents: Any, dtype: DType, shape: list[int]) -> Array:
    """An input given in the typed fields of ``InferTensorContents``."""
    field = _CONTENTS.get(dtype)
    if field is None:
        raise InvalidInput(f"Input '{name}': {datatype_of(dtype)} has no typed contents; "
                           f"send it in raw_input_contents")
    values = list(getattr(contents, field))
    if dtype is DType.STRING:
        try:
            values = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"Input '{name}': an element of bytes_contents is not valid "
                               f"UTF-8 ({exc.reason} at byte {exc.start})") from None
    return decode_tensor(name, {"data": values, "shape": shape}, dtype)
