"""OpenAI's embeddings API (``POST /openai/v1/embeddings``) as a protocol of the data plane.

``OpenAIProtocol.respond`` reads the body (``facade.openai_request``), plans the request
(``DataPlane.route``: the version, its ``embeddings`` section and ``max_batch_size``; a refusal
there is counted as a failed call) and sends its rows, texts or token ids, as
``EmbeddingsCall``s of at most ``max_batch_size`` rows, all pinned to that version and all at
once, so that they batch with everyone else's; the answer lists the vectors in input order.
Each call is one ``infer`` of the data plane, counted under the route ``openai``.

Token ids go to the model's ``token_ids`` input (refused for a model that declares none), each
row padded with ``pad_token_id`` to ``max_tokens``: that fixed width lets every id request share
a batch. A longer row is cut to ``max_tokens``, or refused before any call when truncation is
off.

Usage counts what the model read. For texts: each text's ``tokens`` output, at most
``max_tokens`` (what the model keeps of a longer text); 0 for a model without a ``tokens``
output. A text whose count exceeds ``max_tokens`` is refused after the model ran (its count
comes from the model's own tokenizer) when the request's ``truncate`` is false, or, without
one, when ``INFERNO_OPENAI_TRUNCATE`` is. For token ids: the ids sent, at most ``max_tokens``
a row (the model's ``tokens`` output is not asked for).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from common.errors import InfernoError, ModelNotFound
from common.model.config import ModelConfig
from common.model.embeddings import EmbeddingsConfig
from common.model.strings import check_strings
from facade.data_plane import DataPlane
from facade.errors import JSON_HEADER, InvalidParam, error_answer, openai_error
from facade.openai_request import EmbeddingsRequest, TokenIds
from facade.protocol import Answer, Headers

__all__ = ["EMBEDDINGS_PATH", "ROUTE", "EmbeddingsCall", "OpenAIProtocol", "Rows",
           "embeddings_of"]

Array = npt.NDArray[Any]
ROUTE = "openai"
EMBEDDINGS_PATH = "/openai/v1/embeddings"
_JSON = (JSON_HEADER,)


@dataclass(frozen=True, slots=True)
class Rows:
    """What one call answers: its rows' vectors and, when the model counts them, tokens."""

    vectors: Array
    tokens: Array | None


class EmbeddingsCall:
    """Some consecutive rows of one request, for one input; see
    ``facade.protocol.ProtocolCall``."""

    __slots__ = ("_input", "_output", "_rows", "_tokens")
    route = ROUTE

    def __init__(self, name: str, rows: Array, output: str, tokens: str | None) -> None:
        """``rows`` of the input ``name``; ``output`` names the vectors, ``tokens`` the counts
        (``None``: not asked for)."""
        self._input = name
        self._rows = rows
        self._output = output
        self._tokens = tokens

    def parse(self) -> tuple[int | None, float | None]:
        # The version is pinned by the caller; OpenAI's body has no deadline: the model's.
        return None, None

    def decode(self, config: ModelConfig) -> tuple[dict[str, Array], list[str] | None]:
        tokens = [self._tokens] if self._tokens else []
        return {self._input: self._rows}, [self._output, *tokens]

    def encode(self, config: ModelConfig, outputs: dict[str, Array]) -> Rows:
        tokens = self._tokens
        return Rows(outputs[self._output], None if tokens is None else outputs[tokens])


def embeddings_of(config: ModelConfig, dimensions: int | None) -> EmbeddingsConfig:
    """The version's ``embeddings`` section: 404 for a model that serves none, 400 when
    ``dimensions`` is not its width."""
    spec = config.embeddings
    if spec is None:
        raise ModelNotFound(f"Model '{config.name}' version {config.version} serves no "
                            f"embeddings: its model.yaml has no 'embeddings' section",
                            config.name)
    width = spec.dimensions(config.signature)
    if dimensions is not None and dimensions != width:
        raise InvalidParam(f"Model '{config.name}' gives {width} dimensions, not {dimensions}: "
                           f"leave 'dimensions' out or send {width}", "dimensions")
    return spec


class OpenAIProtocol:
    """The embeddings route; see ``facade.protocol.BodyRoutedProtocol``."""

    __slots__ = ("_max_inputs", "_truncate")
    name = ROUTE

    def __init__(self, max_inputs: int, truncate: bool) -> None:
        self._max_inputs = max_inputs
        self._truncate = truncate

    async def respond(self, plane: DataPlane, body: bytes, headers: Headers,
                      request_id: str) -> bytes:
        request = EmbeddingsRequest.parse(body, self._max_inputs)
        truncate = self._truncate if request.truncate is None else request.truncate
        with plane.refusals(request.name, ROUTE):
            config = plane.route(request.name, request.version)
            spec = embeddings_of(config, request.dimensions)
            if isinstance(request.input, TokenIds):
                name, rows, sent = _padded(request.input, spec, truncate, config.name)
            else:
                name, rows, sent = spec.input, _strings(request.input, config, spec), None
        counts = spec.tokens if sent is None else None
        size = config.batching.max_batch_size
        calls = [EmbeddingsCall(name, rows[start:start + size], spec.output, counts)
                 for start in range(0, len(rows), size)]
        parts = await _infer_all(plane, request.name, config.version, calls, request_id)
        used = sent if sent is not None else _read(parts, spec, truncate, config.name)
        return _answer(request, parts, used)

    def answer(self, result: bytes) -> Answer:
        return 200, result, _JSON

    def refuse(self, error: InfernoError) -> Answer:
        return error_answer(error, openai_error)


def _strings(texts: list[str], config: ModelConfig, spec: EmbeddingsConfig) -> Array:
    """The texts as the string input's object array, each within its byte limit, checked here
    for the whole list (the calls' own checks would name an index within their part)."""
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    try:
        check_strings(spec.input, array, config.signature.input_specs[spec.input].string_limit)
    except InfernoError as exc:
        raise InvalidParam(exc.message, "input") from None
    return array


def _padded(ids: TokenIds, spec: EmbeddingsConfig, truncate: bool, model: str
            ) -> tuple[str, Array, int]:
    """The ids as the model's token id input (its name, the rows padded with ``pad_token_id``
    to its width, a longer row cut to it or refused), and how many ids that sends."""
    declared = spec.ids
    if declared is None:
        raise InvalidParam(f"'input' holds token ids; model '{model}' takes text: send a "
                           f"string or a list of strings", "input")
    name, width = declared
    lengths = np.fromiter(map(len, ids.rows), dtype=np.int64, count=len(ids.rows))
    if not truncate:
        _refuse_longer(lengths, width, model)
    rows = np.full((len(ids.rows), width), spec.pad_token_id, dtype=np.int64)
    for index, row in enumerate(ids.rows):
        kept = row[:width]
        rows[index, :len(kept)] = kept
    return name, rows, int(np.minimum(lengths, width).sum())


async def _infer_all(plane: DataPlane, name: str, version: int, calls: list[EmbeddingsCall],
                     request_id: str) -> list[Rows]:
    """Every call's rows, in order; the first failure fails the request, the others cancelled."""
    if len(calls) == 1:
        return [await plane.infer(name, version, calls[0], request_id)]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(plane.infer(name, version, call, f"{request_id}.{index}"))
                     for index, call in enumerate(calls)]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _read(parts: list[Rows], spec: EmbeddingsConfig, truncate: bool, model: str) -> int:
    """The tokens the model read of the texts (the usage), refusing a text over
    ``max_tokens`` when truncation is off."""
    if spec.tokens is None:
        return 0
    tokens = np.concatenate([p.tokens for p in parts if p.tokens is not None])
    if spec.max_tokens is None:
        return int(tokens.sum())
    if not truncate:
        _refuse_longer(tokens, spec.max_tokens, model)
    return int(np.minimum(tokens, spec.max_tokens).sum())


def _refuse_longer(tokens: Array, max_tokens: int, model: str) -> None:
    longer = np.flatnonzero(tokens > max_tokens)
    if longer.size:
        first = int(longer[0])
        raise InvalidParam(f"'input[{first}]' is {int(tokens[first])} tokens long; model "
                           f"'{model}' reads at most {max_tokens} ({longer.size} text(s) longer"
                           f"): with 'truncate': false it is refused, not truncated", "input")


def _answer(request: EmbeddingsRequest, parts: list[Rows], used: int) -> bytes:
    """OpenAI's list of embeddings, in input order, and its usage."""
    data: list[dict[str, Any]] = []
    for part in parts:
        vectors = np.ascontiguousarray(part.vectors, dtype="<f4")
        for row in vectors:
            data.append({"object": "embedding", "index": len(data), "embedding": (
                base64.b64encode(row.tobytes()).decode("ascii") if request.base64 else row)})
    return orjson.dumps({"object": "list", "data": data, "model": request.model,
                         "usage": {"prompt_tokens": used, "total_tokens": used}},
                        option=orjson.OPT_SERIALIZE_NUMPY)
