"""String tensors (common/model/strings.py) and the JSON codec, the signature and the model config
on string inputs: every error names the input and the element."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from common.errors import InvalidInput
from common.model.codecs import Codec, decode_tensor, encode_tensor
from common.model.config import ModelConfig
from common.model.dtypes import DType
from common.model.signature import Signature
from common.model.strings import (
    DEFAULT_MAX_STRING_BYTES,
    check_strings,
    decode_offsets,
    decode_prefixed,
    encode_offsets,
    encode_prefixed,
    framed_nbytes,
    from_data,
    string_array,
)


def strings(*values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array.reshape(shape or (len(values),))


def message(call: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        call()
    return info.value.message


# --- JSON data ---------------------------------------------------------------------------------


def test_from_data_keeps_the_nesting_and_the_text() -> None:
    array = from_data("t", [["a", "é"], ["", "日本"]], None)
    assert array.dtype == object and array.shape == (2, 2)
    assert array.tolist() == [["a", "é"], ["", "日本"]]


def test_from_data_reshapes_a_flat_list_and_checks_a_nested_one() -> None:
    assert from_data("t", ["a", "b", "c", "d"], [2, 2]).tolist() == [["a", "b"], ["c", "d"]]
    assert from_data("t", [], [0, 3]).shape == (0, 3)
    assert "does not match" in message(lambda: from_data("t", [["a", "b"]], [2, 1]))


@pytest.mark.parametrize(("data", "expected"), [
    (["a", 1], "Input 't': element 1 is not a string (got the number 1)"),
    (["a", None], "element 1 is not a string (got null)"),
    ([["a", "b"], ["c", True]], "element 3 ([1, 1]) is not a string (got a boolean)"),
    ([["a"], "b"], "not a rectangular array"),
    ([["a"], ["b", "c"]], "not a rectangular array"),
])
def test_from_data_names_the_bad_element(data: Any, expected: str) -> None:
    assert expected in message(lambda: from_data("t", data, None))


def test_check_strings_bounds_the_utf8_bytes_of_each_element() -> None:
    check_strings("t", strings("ab", "é" * 2), 4)
    text = message(lambda: check_strings("t", strings("ok", "é" * 3), 4))
    assert "Input 't': element 1 is 6 bytes long; the limit is 4" in text
    assert "not valid UTF-8" in message(lambda: check_strings("t", strings("\ud800" * 9), 4))
    assert "element 0 is not a string" in message(lambda: check_strings("t", strings(5), 4))


def test_string_array_takes_lists_and_arrays_and_refuses_numbers() -> None:
    assert string_array(["a", "b"], "y").tolist() == ["a", "b"]
    assert string_array(np.array(["a", "b"]), "y").tolist() == ["a", "b"]
    with pytest.raises(TypeError, match="Output 'y': element 1 is not a string"):
        string_array(strings("a", 2), "y")
    with pytest.raises(TypeError, match="element 0 is not a string"):
        string_array([1.5], "y")


# --- the framing's offsets and Triton's length prefixes ---------------------------------------


@pytest.mark.parametrize("values", [(), ("",), ("a", "", "日本語 😀", "x" * 1000)])
def test_offsets_round_trip(values: tuple[str, ...]) -> None:
    array = strings(*values)
    raw = encode_offsets(array)
    assert len(raw) == 4 * (len(values) + 1) + sum(len(v.encode()) for v in values)
    assert len(raw) == framed_nbytes(array)
    assert decode_offsets("t", memoryview(raw), [len(values)]).tolist() == list(values)


def test_offsets_are_never_trusted() -> None:
    raw = bytearray(encode_offsets(strings("ab", "cd")))
    assert "needs 12 bytes of offsets" in message(
        lambda: decode_offsets("t", memoryview(raw[:8]), [2]))
    bad = bytearray(raw)
    bad[4:8] = (5).to_bytes(4, "little")  # past the next offset
    assert "smaller than the one before it" in message(
        lambda: decode_offsets("t", memoryview(bytes(bad)), [2]))
    assert "must start at 0 and end at" in message(
        lambda: decode_offsets("t", memoryview(bytes(raw) + b"x"), [2]))
    broken = bytes(raw[:-1]) + b"\xff"
    assert "element 1 is not valid UTF-8" in message(
        lambda: decode_offsets("t", memoryview(broken), [2]))


def test_prefixed_round_trip_and_refusals() -> None:
    array = strings("a", "", "é", shape=(3, 1))
    raw = encode_prefixed(array)
    assert decode_prefixed("t", memoryview(raw), [3, 1]).tolist() == [["a"], [""], ["é"]]
    assert "ends before the length" in message(
        lambda: decode_prefixed("t", memoryview(raw[:-3]), [3, 1]))
    assert "bytes follow the last" in message(
        lambda: decode_prefixed("t", memoryview(raw + b"z"), [3, 1]))


def test_framed_nbytes_of_numbers_is_nbytes() -> None:
    assert framed_nbytes(np.zeros((2, 3), np.float32)) == 24


# --- the JSON codec ----------------------------------------------------------------------------


def test_codec_round_trips_strings_as_data_whatever_the_codec() -> None:
    array = strings("a", "é", "", "😀", shape=(2, 2))
    for codec in Codec:
        payload = orjson.loads(orjson.dumps(encode_tensor(array, DType.STRING, codec),
                                            option=orjson.OPT_SERIALIZE_NUMPY))
        assert payload == {"dtype": "string", "shape": [2, 2], "data": [["a", "é"], ["", "😀"]]}
        assert decode_tensor("t", payload, DType.STRING).tolist() == array.tolist()


def test_codec_refuses_b64_and_non_strings() -> None:
    assert "takes 'data'" in message(
        lambda: decode_tensor("t", {"b64": "", "shape": [0]}, DType.STRING))
    assert "element 0 is not a string" in message(
        lambda: decode_tensor("t", {"data": [1]}, DType.STRING))
    assert "expected dtype float32, got non-numeric data" in message(
        lambda: decode_tensor("t", {"data": ["a"]}, DType.FLOAT32))


# --- the signature and the model config --------------------------------------------------------


def signature(**extra: Any) -> Signature:
    return Signature.model_validate({
        "inputs": [{"name": "text", "dtype": "string", "shape": ["batch"], **extra}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})


def test_validation_checks_each_element_against_max_string_bytes() -> None:
    sig = signature(max_string_bytes=3)
    assert sig.validate_request({"text": strings("abc")}, None, max_rows=4, model="m").rows == 1
    text = message(lambda: sig.validate_request({"text": strings("abc", "abcd")}, None,
                                                max_rows=4, model="m"))
    assert "Input 'text': element 1 is 4 bytes long; the limit is 3 (max_string_bytes)" in text
    assert signature().inputs[0].string_limit == DEFAULT_MAX_STRING_BYTES
    assert signature(max_string_bytes=3).inputs[0].describe()["max_string_bytes"] == 3


def test_validation_refuses_an_empty_batch_and_a_numeric_array() -> None:
    sig = signature()
    assert "at least 1" in message(
        lambda: sig.validate_request({"text": strings()}, None, max_rows=4, model="m"))
    assert "expected dtype string" in message(
        lambda: sig.validate_request({"text": np.zeros(1)}, None, max_rows=4, model="m"))


def test_max_string_bytes_is_for_string_inputs_only() -> None:
    with pytest.raises(ValidationError, match="for string tensors only"):
        Signature.model_validate({
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch"],
                        "max_string_bytes": 4}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})
    with pytest.raises(ValidationError, match="for inputs only"):
        Signature.model_validate({
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch"]}],
            "outputs": [{"name": "y", "dtype": "string", "shape": ["batch"],
                         "max_string_bytes": 4}]})


def test_torchscript_takes_no_strings() -> None:
    base = {"name": "m", "version": 1, "signature": signature().model_dump()}
    ModelConfig.model_validate({**base, "format": "python", "entrypoint": "model:create"})
    with pytest.raises(ValidationError, match="TorchScript models take numeric tensors only"):
        ModelConfig.model_validate({**base, "format": "torchscript", "artifact": "m.pt"})
