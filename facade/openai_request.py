"""An OpenAI embeddings request body, read and checked before any model is asked
(``EmbeddingsRequest.parse``); docs/embeddings.md is the reference.

- ``model``: an Inferno model name, or ``name:version`` to pin a version. A string that is no
  model name here (``text-embedding-3-small`` included) is the 404 of an unknown model.
- ``input``: one string or a list of at most ``INFERNO_OPENAI_MAX_INPUTS`` strings, none empty;
  or token ids (``TokenIds``): a list of integers (one text's) or a list of at most as many
  such lists, none empty, each id in int64 and not negative. Whether the model takes ids is
  known only once it is looked up: ``facade.openai_protocol`` decides.
- ``encoding_format``: ``float`` (the default) or ``base64``; ``dimensions``: an integer, held
  to the model's width once it is known; ``truncate`` (text-embeddings-inference's name):
  whether a text longer than the model's maximum is truncated (true) or refused (false).
- ``user`` and every field not named here are ignored, so that clients sending more of
  OpenAI's fields (or a newer one) keep working.

A field refused is an ``InvalidParam`` (400) naming it, as OpenAI's ``param``; a body that is
no JSON object, an ``InvalidJson`` or ``InvalidInput`` (400 too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidJson, ModelNotFound
from common.model.config import MODEL_NAME
from common.wire.json_request import parse_json_object
from facade.errors import InvalidParam
from facade.protocol import parse_version

__all__ = ["EmbeddingsRequest", "TokenIds"]

_MODEL_NAME = re.compile(MODEL_NAME)
_FORMATS = {None: False, "float": False, "base64": True}
"""``encoding_format`` → whether the vectors are answered in base64."""
_MAX_ID = 2**63 - 1  # the token id input is int64


@dataclass(frozen=True, slots=True)
class TokenIds:
    """``input`` given as token ids: one row per text, none empty, every id within int64."""

    rows: list[list[int]]


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str
    """The ``model`` asked for, as given: the answer's ``model``."""
    name: str
    version: int | None
    """The version pinned after a ``:`` (``None``: the active one)."""
    input: list[str] | TokenIds
    """The texts, or their token ids."""
    base64: bool
    dimensions: int | None
    truncate: bool | None
    """``None``: as ``INFERNO_OPENAI_TRUNCATE`` says."""

    @classmethod
    def parse(cls, raw: bytes, max_inputs: int) -> EmbeddingsRequest:
        body = parse_json_object(raw, InvalidJson)
        model = body.get("model")
        if not isinstance(model, str):
            raise InvalidParam("'model' must be a string: the name of an Inferno model "
                               "(GET /openai/v1/models lists them)", "model")
        name, version = _model(model)
        return cls(model, name, version, _input(body.get("input", _MISSING), max_inputs),
                   _encoding(body.get("encoding_format")),
                   _integer(body.get("dimensions"), "dimensions"),
                   _flag(body.get("truncate"), "truncate"))


_MISSING = object()


def _model(model: str) -> tuple[str, int | None]:
    name, colon, version = model.partition(":")
    if not _MODEL_NAME.match(name):
        raise ModelNotFound(f"The model '{model[:80]}' does not exist here: an Inferno model name "
                            f"is letters, digits, '_' and '-' (at most 64), optionally followed "
                            f"by ':<version>'; GET /openai/v1/models lists them", model[:80])
    if not colon:
        return name, None
    try:
        return name, parse_version(version)
    except ValueError as exc:
        raise InvalidParam(f"'model': the version after ':' in {model[:80]!r}: {exc}",
                           "model") from None


def _input(given: Any, max_inputs: int) -> list[str] | TokenIds:
    if given is _MISSING or given is None:
        raise InvalidParam("'input' is required: a string or a list of strings", "input")
    if isinstance(given, str):
        if not given:
            raise InvalidParam("'input' is an empty string", "input")
        return [given]
    if not isinstance(given, list):
        raise InvalidParam(f"'input' must be a string or a list of strings, not "
                           f"{_kind(given)}", "input")
    if not given:
        raise InvalidParam("'input' is an empty list: give at least one string", "input")
    if _is_int(given[0]):  # one text's ids: as many as it has, whatever max_inputs says
        return TokenIds([_ids(given, "input")])
    if len(given) > max_inputs:
        raise InvalidParam(f"'input' holds {len(given)} texts; at most {max_inputs} may be "
                           f"embedded in one request (INFERNO_OPENAI_MAX_INPUTS)", "input")
    if isinstance(given[0], list):
        return TokenIds([_row(row, f"input[{index}]") for index, row in enumerate(given)])
    for index, text in enumerate(given):
        if not isinstance(text, str):
            raise InvalidParam(f"'input[{index}]' is {_kind(text)}, not a string", "input")
        if not text:
            raise InvalidParam(f"'input[{index}]' is an empty string", "input")
    return given


def _row(row: Any, where: str) -> list[int]:
    if not isinstance(row, list):
        raise InvalidParam(f"'{where}' is {_kind(row)}, not a list of token ids", "input")
    if not row:
        raise InvalidParam(f"'{where}' is an empty list of token ids", "input")
    return _ids(row, where)


def _ids(row: list[Any], where: str) -> list[int]:
    """``row`` checked as token ids; ``where`` names it (``input``, ``input[2]``)."""
    for index, value in enumerate(row):
        if not _is_int(value):
            raise InvalidParam(f"'{where}[{index}]' is {_kind(value)}, not a token id",
                               "input")
        if not 0 <= value <= _MAX_ID:
            raise InvalidParam(f"'{where}[{index}]' is {str(value)[:24]}: a token id is an "
                               f"integer from 0 to 2^63 - 1", "input")
    return row


def _encoding(given: Any) -> bool:
    base64 = _FORMATS.get(given) if isinstance(given, str) or given is None else None
    if base64 is None:
        raise InvalidParam(f"'encoding_format' must be 'float' or 'base64', not "
                           f"{str(given)[:40]!r}", "encoding_format")
    return base64


def _integer(given: Any, field: str) -> int | None:
    if given is None:
        return None
    if _is_int(given):
        return int(given)
    raise InvalidParam(f"'{field}' must be an integer, not {_kind(given)}", field)


def _flag(given: Any, field: str) -> bool | None:
    if given is None or isinstance(given, bool):
        return given
    raise InvalidParam(f"'{field}' must be true or false, not {_kind(given)}", field)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """What a JSON value is, in a message's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else "a string"
