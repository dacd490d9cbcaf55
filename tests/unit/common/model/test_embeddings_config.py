"""model.yaml's ``embeddings`` section held to the signature: what qualifies a model for the
OpenAI embeddings API, and the error a mismatch makes (the file, the field, the tensor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from common.model.config import ModelConfig
from common.model.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[4]


def config(embeddings: dict[str, Any], *, inputs: list[dict[str, Any]] | None = None,
           outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"name": "m", "version": 1, "format": "python", "entrypoint": "model:create",
            "signature": {
                "inputs": inputs or [{"name": "text", "dtype": "string", "shape": ["batch"]}],
                "outputs": outputs or [
                    {"name": "vector", "dtype": "float32", "shape": ["batch", 8]},
                    {"name": "count", "dtype": "int64", "shape": ["batch"]}]},
            "embeddings": embeddings}


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ModelConfig.model_validate(data)
    return str(info.value)


def test_a_text_in_vector_out_model_qualifies() -> None:
    parsed = ModelConfig.model_validate(config({"input": "text", "output": "vector",
                                                "tokens": "count", "max_tokens": 16}))
    assert parsed.embeddings is not None
    assert parsed.embeddings.dimensions(parsed.signature) == 8
    assert (parsed.embeddings.tokens, parsed.embeddings.max_tokens) == ("count", 16)
    bare = ModelConfig.model_validate(config({"input": "text", "output": "vector"}))
    assert bare.embeddings is not None and bare.embeddings.tokens is None
    assert ModelConfig.model_validate({k: v for k, v in config({}).items()
                                       if k != "embeddings"}).embeddings is None


def test_minilm_declares_its_tensors() -> None:
    entry = ModelRepository(ROOT / "models").get("minilm", 1)
    spec = entry.config.embeddings
    assert spec is not None
    assert (spec.input, spec.output, spec.tokens, spec.max_tokens) == (
        "text", "embedding", "tokens", 256)
    assert spec.dimensions(entry.config.signature) == 384


@pytest.mark.parametrize(("embeddings", "says"), [
    ({"input": "texts", "output": "vector"}, "embeddings.input: the signature has no input "
                                             "'texts' (inputs: text)"),
    ({"input": "text", "output": "vec"}, "embeddings.output: the signature has no output 'vec'"),
    ({"input": "text", "output": "count"}, "embeddings.output: 'count' must be a float32 output "
                                           "of shape [batch, D] with D fixed"),
    ({"input": "text", "output": "vector", "tokens": "vector"},
     "embeddings.tokens: 'vector' must be an int64 or int32 output of shape [batch]"),
    ({"input": "text", "output": "vector", "max_tokens": 16},
     "embeddings.max_tokens needs embeddings.tokens"),
    ({"input": "text", "output": "vector", "max_tokens": 0}, "greater than or equal to 1"),
    ({"input": "text", "output": "vector", "pooling": "mean"}, "Extra inputs are not permitted"),
])
def test_a_section_that_does_not_fit_the_signature_is_refused(embeddings: dict[str, Any],
                                                              says: str) -> None:
    assert says in refusal(config(embeddings))


def test_the_text_must_be_one_string_per_row_and_the_only_required_input() -> None:
    matrix = [{"name": "text", "dtype": "string", "shape": ["batch", 2]}]
    assert "'text' must be a string input of shape [batch]" in refusal(
        config({"input": "text", "output": "vector"}, inputs=matrix))
    numbers = [{"name": "text", "dtype": "int64", "shape": ["batch"]}]
    assert "'text' must be a string input of shape [batch], not int64" in refusal(
        config({"input": "text", "output": "vector"}, inputs=numbers))
    two = [{"name": "text", "dtype": "string", "shape": ["batch"]},
           {"name": "lang", "dtype": "string", "shape": ["batch"]}]
    assert "also requires lang (make them optional)" in refusal(
        config({"input": "text", "output": "vector"}, inputs=two))
    two[1]["optional"] = True
    ModelConfig.model_validate(config({"input": "text", "output": "vector"}, inputs=two))


IDS = {"input": "text", "output": "vector", "tokens": "count", "max_tokens": 16,
       "token_ids": "ids"}


def id_inputs(ids: dict[str, Any] | None = None, text_optional: bool = True
              ) -> list[dict[str, Any]]:
    return [{"name": "text", "dtype": "string", "shape": ["batch"], "optional": text_optional},
            {"name": "ids", "dtype": "int64", "shape": ["batch", 16], "optional": True,
             **(ids or {})}]


def test_a_model_may_take_token_ids_as_wide_as_max_tokens() -> None:
    parsed = ModelConfig.model_validate(config({**IDS, "pad_token_id": 1}, inputs=id_inputs()))
    assert parsed.embeddings is not None
    assert (parsed.embeddings.ids, parsed.embeddings.pad_token_id) == (("ids", 16), 1)
    default = ModelConfig.model_validate(config(IDS, inputs=id_inputs())).embeddings
    assert default is not None and default.pad_token_id == 0
    bare = ModelConfig.model_validate(config({"input": "text", "output": "vector"}))
    assert bare.embeddings is not None and bare.embeddings.ids is None


@pytest.mark.parametrize(("embeddings", "inputs", "says"), [
    ({**IDS, "max_tokens": None}, id_inputs(),
     "embeddings.token_ids needs embeddings.max_tokens: the width N of its rows"),
    ({**IDS, "token_ids": "idz"}, id_inputs(),
     "embeddings.token_ids: the signature has no input 'idz' (inputs: text, ids)"),
    (IDS, id_inputs({"dtype": "int32"}), "embeddings.token_ids: 'ids' must be an int64 input of "
                                         "shape [batch, 16] (max_tokens), not int32"),
    (IDS, id_inputs({"shape": ["batch", 8]}), "not int64 ['batch', 8]"),
    (IDS, id_inputs({"shape": ["batch", "seq"]}), "not int64 ['batch', 'seq']"),
    (IDS, id_inputs({"shape": ["batch"]}), "not int64 ['batch']"),
    (IDS, id_inputs(text_optional=False),
     "embeddings.input: 'text' must be optional: true, as embeddings.token_ids is declared"),
    (IDS, id_inputs({"optional": False}),
     "embeddings.token_ids: 'ids' must be optional: true, as embeddings.token_ids is declared"),
    ({**IDS, "pad_token_id": -1}, id_inputs(), "greater than or equal to 0"),
])
def test_token_ids_that_do_not_fit_the_signature_are_refused(
        embeddings: dict[str, Any], inputs: list[dict[str, Any]], says: str) -> None:
    assert says in refusal(config(embeddings, inputs=inputs))


def test_a_vector_of_symbolic_width_is_refused() -> None:
    ragged = [{"name": "vector", "dtype": "float32", "shape": ["batch", "dim"]}]
    assert "with D fixed, not float32 ['batch', 'dim']" in refusal(
        config({"input": "text", "output": "vector"}, outputs=ragged))


def test_the_repository_reports_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "m" / "1" / "model.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config({"input": "text", "output": "nope"})))
    repository = ModelRepository(tmp_path)
    repository.scan()
    assert repository.names() == []
    [problem] = repository.problems
    assert problem.file == path
    assert "embeddings.output: the signature has no output 'nope'" in problem.message
