"""An OpenAI embeddings body read and checked before any model is asked: what is accepted, and
the 400 (naming OpenAI's ``param``) or 404 for what is not. The real client's requests are in
tests/integration/test_openai_embeddings.py; here, bodies no client would build."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from common.errors import InvalidInput, ModelNotFound
from facade.errors import InvalidParam, openai_error
from facade.openai_request import EmbeddingsRequest, TokenIds


def parse(body: dict[str, Any] | bytes, max_inputs: int = 8) -> EmbeddingsRequest:
    return EmbeddingsRequest.parse(body if isinstance(body, bytes) else orjson.dumps(body),
                                   max_inputs)


def test_a_string_a_list_and_the_options() -> None:
    one = parse({"model": "minilm", "input": "a text", "user": "u1", "seed": 3})
    assert (one.name, one.version, one.input, one.base64) == ("minilm", None, ["a text"], False)
    assert one.dimensions is None and one.truncate is None
    many = parse({"model": "minilm:2", "input": ["a", "b"], "encoding_format": "base64",
                  "dimensions": 384, "truncate": False})
    assert (many.model, many.name, many.version) == ("minilm:2", "minilm", 2)
    assert many.input == ["a", "b"] and many.base64
    assert (many.dimensions, many.truncate) == (384, False)


def test_token_ids_are_kept_for_the_protocol_to_judge_with_the_model() -> None:
    """Whether the model takes ids is known only once it is looked up (facade.openai_protocol);
    one text's ids are one row, as long as they are, whatever ``max_inputs`` says."""
    assert parse({"model": "minilm", "input": [101, 0, 102]}).input == TokenIds([[101, 0, 102]])
    assert parse({"model": "minilm", "input": list(range(20))}).input == TokenIds(
        [list(range(20))])
    assert parse({"model": "minilm", "input": [[5], [2**63 - 1, 3]]}).input == TokenIds(
        [[5], [2**63 - 1, 3]])


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"input": "x"}, "model", "'model' must be a string"),
    ({"model": 7, "input": "x"}, "model", "'model' must be a string"),
    ({"model": "minilm:0", "input": "x"}, "model", "greater than or equal to 1"),
    ({"model": "minilm:two", "input": "x"}, "model", "valid integer"),
    ({"model": "minilm:", "input": "x"}, "model", "the version after ':'"),
    ({"model": "minilm"}, "input", "'input' is required"),
    ({"model": "minilm", "input": None}, "input", "'input' is required"),
    ({"model": "minilm", "input": ""}, "input", "'input' is an empty string"),
    ({"model": "minilm", "input": {"text": "x"}}, "input", "not an object"),
    ({"model": "minilm", "input": []}, "input", "'input' is an empty list"),
    ({"model": "minilm", "input": ["a", "", "c"]}, "input", "'input[1]' is an empty string"),
    ({"model": "minilm", "input": ["a", ["b"]]}, "input", "'input[1]' is a list, not a string"),
    ({"model": "minilm", "input": ["a", True]}, "input", "'input[1]' is a boolean"),
    ({"model": "minilm", "input": ["a", 2.5]}, "input", "'input[1]' is a number"),
    ({"model": "minilm", "input": [[1], [2]] * 5}, "input", "'input' holds 10 texts; at most 8"),
    ({"model": "minilm", "input": [[1, 2], []]}, "input",
     "'input[1]' is an empty list of token ids"),
    ({"model": "minilm", "input": [7, -1]}, "input",
     "'input[1]' is -1: a token id is an integer from 0 to 2^63 - 1"),
    ({"model": "minilm", "input": [[7], [3, 2**63]]}, "input",
     "'input[1][1]' is 9223372036854775808: a token id is an integer from 0"),
    ({"model": "minilm", "input": [7, 2.0]}, "input", "'input[1]' is a number, not a token id"),
    ({"model": "minilm", "input": [7, True]}, "input", "'input[1]' is a boolean, not a token id"),
    ({"model": "minilm", "input": [7, "a"]}, "input", "'input[1]' is a string, not a token id"),
    ({"model": "minilm", "input": [7, [8]]}, "input", "'input[1]' is a list, not a token id"),
    ({"model": "minilm", "input": [[7], "a"]}, "input",
     "'input[1]' is a string, not a list of token ids"),
    ({"model": "minilm", "input": [[7], 8]}, "input",
     "'input[1]' is a number, not a list of token ids"),
    ({"model": "minilm", "input": [[7], [8, None]]}, "input",
     "'input[1][1]' is null, not a token id"),
    ({"model": "minilm", "input": ["a", 3]}, "input", "'input[1]' is a number, not a string"),
    ({"model": "minilm", "input": ["x"] * 9}, "input",
     "'input' holds 9 texts; at most 8 may be embedded in one request"),
    ({"model": "minilm", "input": "x", "encoding_format": "int8"}, "encoding_format",
     "'encoding_format' must be 'float' or 'base64', not 'int8'"),
    ({"model": "minilm", "input": "x", "encoding_format": 1}, "encoding_format", "not '1'"),
    ({"model": "minilm", "input": "x", "dimensions": "384"}, "dimensions",
     "'dimensions' must be an integer, not a string"),
    ({"model": "minilm", "input": "x", "dimensions": True}, "dimensions", "not a boolean"),
    ({"model": "minilm", "input": "x", "truncate": "no"}, "truncate",
     "'truncate' must be true or false"),
])
def test_a_bad_field_is_a_400_naming_it(body: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(InvalidParam) as raised:
        parse(body)
    assert raised.value.param == param and says in raised.value.message
    status, answer = openai_error(raised.value)
    assert status == 400
    assert orjson.loads(answer) == {"error": {"message": raised.value.message, "param": param,
                                              "type": "invalid_request_error",
                                              "code": "invalid_input"}}


@pytest.mark.parametrize("model", ["text.embedding", "sentence-transformers/all-MiniLM",
                                   "", "-minilm", "m" * 65, ":1"])
def test_a_name_that_is_no_model_name_is_the_404_of_an_unknown_model(model: str) -> None:
    with pytest.raises(ModelNotFound) as raised:
        parse({"model": model, "input": "x"})
    status, answer = openai_error(raised.value)
    assert status == 404 and orjson.loads(answer)["error"]["param"] == "model"


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b'"minilm"'])
def test_a_body_that_is_no_json_object_is_a_400(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(raw)
    assert openai_error(raised.value)[0] == 400
