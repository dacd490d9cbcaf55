"""Signatures: their own validation, and the checks a request must pass (exact messages)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from common.errors import InvalidInput
from common.model.dtypes import DType
from common.model.signature import Checked, Signature, TensorSpec


def signature(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None
              ) -> Signature:
    return Signature.model_validate({
        "inputs": inputs,
        "outputs": outputs or [{"name": "probs", "dtype": "float32", "shape": ["batch", 10]},
                               {"name": "label", "dtype": "int64", "shape": ["batch"]}],
    })


@pytest.fixture
def bag() -> Signature:
    """tokens and mask share the symbolic ``seq``; ``weights`` is optional; order is not sorted."""
    return signature([
        {"name": "tokens", "dtype": "int64", "shape": ["batch", "seq"]},
        {"name": "mask", "dtype": "bool", "shape": ["batch", "seq"]},
        {"name": "weights", "dtype": "float32", "shape": ["batch", 3], "optional": True},
    ])


def message_of(check: Any, *args: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        check(*args)
    return info.value.message


# --- input names -----------------------------------------------------------------------------


def test_missing_required_input_message(bag: Signature) -> None:
    assert message_of(bag.check_input_names, ["mask"]) == (
        "Missing required input(s): tokens. Expected inputs: mask, tokens, weights")


def test_missing_message_exact_format() -> None:
    sig = signature([{"name": "tokens", "dtype": "int64", "shape": ["batch", "seq"]},
                     {"name": "mask", "dtype": "bool", "shape": ["batch", "seq"]}])
    assert message_of(sig.check_input_names, ["mask"]) == (
        "Missing required input(s): tokens. Expected inputs: mask, tokens")
    assert message_of(sig.check_input_names, []) == (
        "Missing required input(s): mask, tokens. Expected inputs: mask, tokens")


def test_unexpected_inputs_message(bag: Signature) -> None:
    assert message_of(bag.check_input_names, ["tokens", "mask", "zeta", "alpha"]) == (
        "Unexpected input(s): alpha, zeta. Expected inputs: mask, tokens, weights")


def test_optional_inputs_may_be_left_out(bag: Signature) -> None:
    bag.check_input_names(["tokens", "mask"])
    bag.check_input_names(["tokens", "mask", "weights"])
    rows = bag.check_inputs({"tokens": np.zeros((2, 4), np.int64),
                             "mask": np.ones((2, 4), bool)})
    assert rows == 2


def test_a_request_with_no_inputs_at_all_is_invalid_input() -> None:
    sig = signature([{"name": "x", "dtype": "float32", "shape": ["batch"], "optional": True}])
    sig.check_input_names([])
    with pytest.raises(InvalidInput):
        sig.check_inputs({})


# --- dtypes and shapes -----------------------------------------------------------------------


def test_returns_the_batch_size(bag: Signature) -> None:
    rows = bag.check_inputs({"tokens": np.zeros((5, 7), np.int64),
                             "mask": np.zeros((5, 7), bool),
                             "weights": np.zeros((5, 3), np.float32)})
    assert rows == 5


def test_dtype_mismatch(bag: Signature) -> None:
    message = message_of(bag.check_inputs, {"tokens": np.zeros((1, 2), np.int32),
                                            "mask": np.zeros((1, 2), bool)})
    assert message == "Input 'tokens': expected dtype int64, got int32"


def test_rank_mismatch(bag: Signature) -> None:
    message = message_of(bag.check_inputs, {"tokens": np.zeros(2, np.int64),
                                            "mask": np.zeros((2, 1), bool)})
    assert message == "Input 'tokens': expected shape [batch, seq] (2 dims), got [2]"


def test_fixed_dimension_mismatch(bag: Signature) -> None:
    message = message_of(bag.check_inputs, {"tokens": np.zeros((1, 2), np.int64),
                                            "mask": np.zeros((1, 2), bool),
                                            "weights": np.zeros((1, 4), np.float32)})
    assert message == "Input 'weights': expected shape [batch, 3], got [1, 4]"


def test_symbolic_dimensions_must_agree_across_inputs(bag: Signature) -> None:
    message = message_of(bag.check_inputs, {"tokens": np.zeros((2, 5), np.int64),
                                            "mask": np.zeros((2, 6), bool)})
    assert message == "Input 'mask': dimension 'seq' is 6 here but 5 in input 'tokens'"


def test_batch_must_agree_across_inputs(bag: Signature) -> None:
    message = message_of(bag.check_inputs, {"tokens": np.zeros((2, 5), np.int64),
                                            "mask": np.zeros((3, 5), bool)})
    assert message == "Input 'mask': dimension 'batch' is 3 here but 2 in input 'tokens'"


def test_batch_must_be_at_least_one(bag: Signature) -> None:
    message = message_of(bag.check_inputs, {"tokens": np.zeros((0, 5), np.int64),
                                            "mask": np.zeros((0, 5), bool)})
    assert message == "The batch dimension must be at least 1"


def test_bfloat16_inputs_are_uint16_bit_patterns() -> None:
    sig = signature([{"name": "h", "dtype": "bfloat16", "shape": ["batch"]}])
    assert sig.check_inputs({"h": np.zeros(2, np.uint16)}) == 2
    assert "expected dtype bfloat16, got float32" in message_of(
        sig.check_inputs, {"h": np.zeros(2, np.float32)})


# --- outputs ---------------------------------------------------------------------------------


def test_all_outputs_by_default(bag: Signature) -> None:
    assert bag.check_outputs(None) is None
    assert bag.check_outputs([]) is None


def test_requested_outputs_keep_order_without_duplicates(bag: Signature) -> None:
    assert bag.check_outputs(["label", "probs", "label"]) == ["label", "probs"]


def test_unknown_outputs_message(bag: Signature) -> None:
    assert message_of(bag.check_outputs, ["probs", "nope", "logits"]) == (
        "Unknown output(s): nope, logits. Available outputs: label, probs")


def test_cached_views(bag: Signature) -> None:
    assert list(bag.input_specs) == ["tokens", "mask", "weights"]
    assert bag.output_names == ["probs", "label"]
    assert bag.output_dtypes == {"probs": DType.FLOAT32, "label": DType.INT64}


def test_describe() -> None:
    spec = TensorSpec(name="x", dtype=DType.FLOAT16, shape=["batch", "n", 4], optional=True)
    assert spec.describe() == {"name": "x", "dtype": "float16", "shape": ["batch", "n", 4],
                               "optional": True}


# --- the signature's own validation -------------------------------------------------------------


@pytest.mark.parametrize("shape", [["seq", "batch"], [4], []])
def test_first_dimension_must_be_batch(shape: list[Any]) -> None:
    with pytest.raises(ValidationError, match="the first dimension must be 'batch'"):
        TensorSpec(name="x", dtype=DType.FLOAT32, shape=shape)


def test_duplicate_input_names() -> None:
    with pytest.raises(ValidationError, match="duplicate inputs name"):
        signature([{"name": "x", "dtype": "float32", "shape": ["batch"]},
                   {"name": "x", "dtype": "int64", "shape": ["batch"]}])


def test_duplicate_output_names() -> None:
    with pytest.raises(ValidationError, match="duplicate outputs name"):
        signature([{"name": "x", "dtype": "float32", "shape": ["batch"]}],
                  [{"name": "y", "dtype": "float32", "shape": ["batch"]},
                   {"name": "y", "dtype": "float32", "shape": ["batch"]}])


def test_an_input_and_an_output_may_share_a_name() -> None:
    sig = signature([{"name": "x", "dtype": "float32", "shape": ["batch"]}],
                    [{"name": "x", "dtype": "float32", "shape": ["batch"]}])
    assert sig.output_names == ["x"]


def test_outputs_cannot_be_optional() -> None:
    with pytest.raises(ValidationError, match="outputs cannot be optional"):
        signature([{"name": "x", "dtype": "float32", "shape": ["batch"]}],
                  [{"name": "y", "dtype": "float32", "shape": ["batch"], "optional": True}])


@pytest.mark.parametrize("spec", [
    {"name": "1x", "dtype": "float32", "shape": ["batch"]},
    {"name": "", "dtype": "float32", "shape": ["batch"]},
    {"name": "x", "dtype": "float8", "shape": ["batch"]},
    {"name": "x", "dtype": "float32", "shape": ["batch", -1]},
    {"name": "x", "dtype": "float32", "shape": ["batch", "a-b"]},
    {"name": "x", "dtype": "float32", "shape": ["batch"], "unit": "cm"},
], ids=["name-digit", "name-empty", "dtype", "negative-dim", "bad-symbol", "extra-field"])
def test_bad_tensor_specs(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TensorSpec.model_validate(spec)


def test_inputs_and_outputs_are_required() -> None:
    with pytest.raises(ValidationError):
        Signature.model_validate({"inputs": [], "outputs": [
            {"name": "y", "dtype": "float32", "shape": ["batch"]}]})
    with pytest.raises(ValidationError):
        Signature.model_validate({"inputs": [
            {"name": "x", "dtype": "float32", "shape": ["batch"]}], "outputs": []})


# --- the one validation of a request ---------------------------------------------------------


def test_validate_request_returns_what_it_established(bag: Signature) -> None:
    checked = bag.validate_request({"tokens": np.zeros((3, 5), np.int64),
                                    "mask": np.ones((3, 5), bool)}, ["label", "label"],
                                   max_rows=4, model="bag")
    assert checked == Checked(rows=3, dims=(("mask", (5,)), ("tokens", (5,))),
                              outputs=["label"])
    assert bag.validate_request({"tokens": np.zeros((1, 2), np.int64),
                                 "mask": np.ones((1, 2), bool)}, None,
                                max_rows=4, model="bag").outputs is None


@pytest.mark.parametrize(("inputs", "outputs", "message"), [
    ({"tokens": np.zeros((5, 2), np.int64), "mask": np.ones((5, 2), bool)}, None,
     "Batch of 5 rows exceeds max_batch_size 4 of model 'bag'"),
    ({"mask": np.ones((1, 2), bool)}, None, "Missing required input(s): tokens"),
    ({"tokens": np.zeros((1, 2), np.int64), "mask": np.ones((1, 2), bool),
      "z": np.ones(1)}, None, "Unexpected input(s): z"),
    ({"tokens": np.zeros((1, 2), np.int64), "mask": np.ones((1, 2), bool)}, ["nope"],
     "Unknown output(s): nope"),
    ({"tokens": np.zeros((1, 2), np.int32), "mask": np.ones((1, 2), bool)}, None,
     "Input 'tokens': expected dtype int64, got int32"),
    ({"tokens": np.zeros((0, 2), np.int64), "mask": np.ones((0, 2), bool)}, None,
     "The batch dimension must be at least 1"),
], ids=["too-many-rows", "missing", "unexpected", "unknown-output", "dtype", "no-rows"])
def test_validate_request_refuses_with_the_checks_own_messages(
        bag: Signature, inputs: dict[str, Any], outputs: list[str] | None,
        message: str) -> None:
    assert message in message_of(
        lambda: bag.validate_request(inputs, outputs, max_rows=4, model="bag"))
