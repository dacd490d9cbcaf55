"""Request bytes for the load generator: built once per run, chosen by protocol.

Every request of a run is the same pre-encoded bytes, so building them may be slow and general
(the inputs come from the signature the server reports) while the generator's loop stays one
write and one read. ``BUILDERS`` maps a ``--protocol`` name to its builder; the KServe v2 JSON or
Triton binary-tensor bodies are one more function each, with no change to the drivers. gRPC
(``GRPC``: ``ModelInfer``; ``GRPC_STREAM``: ``ModelStreamInfer``) is no HTTP request:
``grpc_infer`` serialises one ``ModelInferRequest`` that the gRPC drivers (``bench.grpc_load``)
send, and ``grpc_response`` the fixed answer of the bare gRPC floor (``bench.grpc_floor``).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

__all__ = ["BASELINE", "BUILDERS", "COMPARED", "GRPC", "GRPC_PROTOCOLS", "GRPC_STREAM", "PROTOCOLS",
           "SENTENCES", "HttpRequest", "ModelInfo", "RawTensor", "TensorInfo", "example_array",
           "grpc_infer", "grpc_response", "local_model_info", "model_info", "raw_tensors"]

SYMBOLIC_DIM = 8
"""Size given to a symbolic non-batch dimension (e.g. ``seq``) in generated inputs."""

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Inference servers batch requests to use the hardware well.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply on Monday.",
    "Please send me the report by Friday.",
    "It is raining again in the city today.",
    "Transformers turn text into vectors.",
    "How far is the nearest train station?",
)
"""Short sentences (5 to 9 words) for ``string`` inputs, drawn at random per element."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The active version of a model, as the server describes it."""

    name: str
    version: int
    inputs: tuple[TensorInfo, ...]
    max_batch_size: int
    outputs: tuple[TensorInfo, ...] = ()
    pinned: bool = False
    """Requests name the version (``--compare-versions``); otherwise they go to the active one."""

    def sized(self, symbolic: int) -> ModelInfo:
        """The same model with every symbolic non-batch input dimension ``symbolic`` long."""
        return replace(self, inputs=tuple(
            replace(t, shape=t.shape[:1] + tuple(symbolic if isinstance(d, str) else d
                                                 for d in t.shape[1:])) for t in self.inputs))

    def path(self, v1: bool) -> str:
        """The predict path of v1 (``True``) or v2, pinned to the version when ``pinned``."""
        model = f"{self.name}/versions/{self.version}" if self.pinned else self.name
        return f"/v1/models/{model}:predict" if v1 else f"/v2/models/{model}/infer"

    @property
    def openai_name(self) -> str:
        """The model as the OpenAI embeddings API names it: ``name``, or ``name:version``."""
        return f"{self.name}:{self.version}" if self.pinned else self.name


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def model_info(base_url: str, name: str) -> ModelInfo:
    """``GET /v1/models/{name}/active``: works against a remote ``--url`` server too."""
    return _info(get_json(f"{base_url}/v1/models/{name}/active"))


def local_model_info(repo: str, name: str, version: int | None = None) -> ModelInfo:
    """A version (default: the newest) of ``name`` in the repository at ``repo``, described as
    a server would: for a server that has no metadata route (the plain FastAPI baseline), and
    for the versions ``--compare-versions`` pins."""
    from common.model.repository import ModelRepository

    return _info(ModelRepository(Path(repo)).get(name, version).config.describe())


def _info(body: Any) -> ModelInfo:
    """A ``ModelConfig.describe()`` document (what ``/v1/models/{name}/active`` returns)."""
    def tensors(key: str) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(t["name"], t["dtype"], tuple(t["shape"]))
                     for t in body.get(key, ()))

    return ModelInfo(name=body["name"], version=int(body["version"]), inputs=tensors("inputs"),
                     max_batch_size=int(body.get("batching", {}).get("max_batch_size", 1)),
                     outputs=tensors("outputs"))


def example_array(dtype: str, shape: Sequence[int | str], rows: int,
                  rng: np.random.Generator) -> npt.NDArray[Any]:
    """Plausible values of ``dtype``: the first dimension is ``rows``, symbolic ones 8.

    Floats are rounded to 6 decimals so a JSON body is the size a real client sends (~9 bytes a
    number), not 20-digit reprs. ``string`` elements are short English sentences (``SENTENCES``),
    in an object array.
    """
    dims = [rows] + [d if isinstance(d, int) else SYMBOLIC_DIM for d in shape[1:]]
    if dtype == "string":
        texts = np.empty(dims, dtype=object)
        texts.flat[:] = [SENTENCES[i] for i in rng.integers(0, len(SENTENCES), texts.size)]
        return texts
    if dtype == "bool":
        return rng.random(dims) < 0.5
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 10, dims).astype(dtype)
    return rng.standard_normal(dims).round(6)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP/1.1 request, encoded once with :meth:`encode`."""

    method: str
    path: str
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, base_url: str) -> bytes:
        parts = urlsplit(base_url)
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        head = (f"{self.method} {parts.path.rstrip('/')}{self.path} HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\n"
                f"Content-Type: {self.content_type}\r\n{extra}"
                f"Content-Length: {len(self.body)}\r\n\r\n")
        return head.encode("ascii") + self.body


Builder = Callable[[ModelInfo, int, int], HttpRequest]


def v1_json(model: ModelInfo, rows: int, seed: int) -> HttpRequest:
    """``POST /v1/models/{name}:predict`` with ``{"inputs": {name: {"data": [...]}}}``."""
    rng = np.random.default_rng(seed)
    inputs = {t.name: {"data": example_array(t.dtype, t.shape, rows, rng).tolist()}
              for t in model.inputs}
    body = json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
    return HttpRequest("POST", model.path(v1=True), body, "application/json")


def _raw(array: npt.NDArray[Any], dtype: str) -> bytes:
    """Little-endian C-order bytes of ``array`` as ``dtype`` (bfloat16: its 16-bit patterns;
    string: Triton's ``BYTES``, each element's uint32 length then its UTF-8)."""
    if dtype == "string":
        from common.model.strings import encode_prefixed

        return encode_prefixed(array)
    if dtype == "bfloat16":
        from common.model.dtypes import float_to_bf16_bits

        return float_to_bf16_bits(array).astype("<u2").tobytes()
    return array.astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def v1_b64(model: ModelInfo, rows: int, seed: int) -> HttpRequest:
    """The v1 route with raw little-endian tensor bytes in base64 (``{"b64", "shape", "dtype"}``)
    and ``"codec": "base64"`` outputs: no JSON numbers either way, so with many rows per request
    the model, not the facade's parsing, is what costs."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for t in model.inputs:
        array = example_array(t.dtype, t.shape, rows, rng)
        inputs[t.name] = {"b64": base64.b64encode(_raw(array, t.dtype)).decode("ascii"),
                          "shape": list(array.shape), "dtype": t.dtype}
    body = json.dumps({"inputs": inputs, "codec": "base64"}, separators=(",", ":")).encode()
    return HttpRequest("POST", model.path(v1=True), body, "application/json")


def _v2_datatype(dtype: str) -> str:
    from common.model.dtypes import DType
    from facade.v2_protocol import datatype_of

    return datatype_of(DType(dtype))


def v2_json(model: ModelInfo, rows: int, seed: int) -> HttpRequest:
    """KServe v2 ``POST /v2/models/{name}/infer`` with flat row-major JSON ``data``."""
    rng = np.random.default_rng(seed)
    inputs = []
    for t in model.inputs:
        array = example_array(t.dtype, t.shape, rows, rng)
        inputs.append({"name": t.name, "datatype": _v2_datatype(t.dtype),
                       "shape": list(array.shape), "data": array.reshape(-1).tolist()})
    body = json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
    return HttpRequest("POST", model.path(v1=False), body, "application/json")


@dataclass(frozen=True, slots=True)
class RawTensor:
    """One input as the binary protocols send it: v2 datatype, shape and raw bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


def raw_tensors(model: ModelInfo, rows: int, seed: int, outputs: bool = False
                ) -> list[RawTensor]:
    """Every input (``outputs``: every output) of ``model`` as raw little-endian bytes (what
    v2-binary and gRPC send)."""
    rng = np.random.default_rng(seed)
    tensors = []
    for t in model.outputs if outputs else model.inputs:
        array = example_array(t.dtype, t.shape, rows, rng)
        tensors.append(RawTensor(t.name, _v2_datatype(t.dtype), array.shape,
                                 _raw(array, t.dtype)))
    return tensors


def v2_binary(model: ModelInfo, rows: int, seed: int) -> HttpRequest:
    """Triton's binary tensor extension: a JSON header, then the raw input bytes; every output
    asked back binary (``binary_data_output``)."""
    tensors = raw_tensors(model, rows, seed)
    inputs = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape),
               "parameters": {"binary_data_size": len(t.raw)}} for t in tensors]
    raws = [t.raw for t in tensors]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}},
                        separators=(",", ":")).encode()
    return HttpRequest("POST", model.path(v1=False), header + b"".join(raws),
                       "application/octet-stream",
                       (("Inference-Header-Content-Length", str(len(header))),))


def openai_embeddings(model: ModelInfo, rows: int, seed: int) -> HttpRequest:
    """OpenAI's ``POST /openai/v1/embeddings``: ``rows`` sentences as ``input`` (one: a
    string, as clients send a single text), vectors answered as JSON floats (the default)."""
    text = next((t for t in model.inputs if t.dtype == "string"), None)
    if text is None:
        raise ValueError(f"--protocol openai sends text: model '{model.name}' has no string "
                         f"input")
    sentences = example_array("string", text.shape, rows, np.random.default_rng(seed)).tolist()
    body = json.dumps({"model": model.openai_name,
                       "input": sentences[0] if rows == 1 else sentences}).encode()
    return HttpRequest("POST", "/openai/v1/embeddings", body, "application/json")


BUILDERS: dict[str, Builder] = {"v1": v1_json, "v1-b64": v1_b64, "v2": v2_json,
                                "v2-binary": v2_binary, "openai": openai_embeddings}
"""Request builders by ``--protocol`` (``--binary`` picks ``v2-binary`` for ``v2``)."""

GRPC = "grpc"
"""The ``--protocol`` of the unary gRPC driver (``bench.grpc_load``): no HTTP request,
``grpc_infer``."""
GRPC_STREAM = "grpc-stream"
"""The ``--protocol`` of the streaming gRPC driver: the same message on ``ModelStreamInfer``."""
GRPC_PROTOCOLS = (GRPC, GRPC_STREAM)
PROTOCOLS = (*sorted(BUILDERS), *GRPC_PROTOCOLS)
COMPARED = ("v1", "v2", "v2-binary", GRPC, GRPC_STREAM)
"""What ``--compare-protocols`` runs, in this order, against the same servers."""
BASELINE = "v2-binary"
"""The protocol ``--compare-protocols`` measures the others against."""


def grpc_infer(model: ModelInfo, rows: int, seed: int) -> bytes:
    """A serialised ``inference.ModelInferRequest`` with the inputs in ``raw_input_contents``:
    the tensors v2-binary sends, outputs answered raw as Triton always does."""
    from tritonclient.grpc import service_pb2 as pb

    tensors = raw_tensors(model, rows, seed)
    request = pb.ModelInferRequest(
        model_name=model.name,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype,
                                                      shape=t.shape) for t in tensors],
        raw_input_contents=[t.raw for t in tensors])
    return bytes(request.SerializeToString())


def grpc_response(model: ModelInfo, rows: int) -> bytes:
    """A serialised ``inference.ModelInferResponse`` of ``model``'s outputs at ``rows`` rows,
    raw as Inferno answers ``grpc_infer``: the bare floor's fixed answer."""
    from tritonclient.grpc import service_pb2 as pb

    tensors = raw_tensors(model, rows, 0, outputs=True)
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=str(model.version),
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype,
                                                         shape=t.shape) for t in tensors],
        raw_output_contents=[t.raw for t in tensors])
    return bytes(response.SerializeToString())
