"""The onnx runtime: a model.onnx exported from a torch module answers as the module does, and a
graph that does not match model.yaml's signature fails the load naming the tensor and both sides."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
import yaml

from common.model.config import Device, ModelConfig
from common.model.repository import ModelRepository
from tests.onnx_models import (
    SIGNATURE,
    scorer_inputs,
    scorer_outputs,
    write_scorer,
    write_string_identity,
)
from worker.onnx_runtime import INSTALL, MissingExtra, OnnxRuntime
from worker.runtime import Runtime, RuntimeContext, RuntimeNotLoaded, create_runtime

ort = pytest.importorskip("onnxruntime")


def runtime_of(directory: Path, device: Device = Device.CPU) -> Runtime:
    repository = ModelRepository(directory.parents[1])
    repository.scan()
    entry = repository.get(directory.parent.name, int(directory.name))
    return create_runtime(entry.config, entry.directory, device)


def loaded(directory: Path) -> Runtime:
    runtime = runtime_of(directory)
    runtime.load()
    return runtime


def load_error(directory: Path) -> str:
    runtime = runtime_of(directory)
    with pytest.raises(ValueError, match=r"does not match model\.yaml's signature") as failed:
        runtime.load()
    return str(failed.value)


def changed(path: str, **spec: Any) -> dict[str, Any]:
    """SIGNATURE with the tensor at ``path`` ("inputs.0") changed by ``spec``."""
    signature = copy.deepcopy(SIGNATURE)
    kind, index = path.split(".")
    signature[kind][int(index)].update(spec)
    return signature


@pytest.mark.parametrize("rows", [1, 7])
def test_outputs_equal_the_torch_modules(tmp_path: Path, rows: int) -> None:
    runtime = loaded(write_scorer(tmp_path))
    assert isinstance(runtime, OnnxRuntime)
    got = runtime.predict(scorer_inputs(rows))
    want = scorer_outputs(rows)
    assert got["scores"].dtype == np.float32 and got["scores"].shape == (rows, 3)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
    assert got["label"].dtype == np.int64
    np.testing.assert_array_equal(got["label"], want["label"])


def test_requests_are_concatenated_and_read_only_arrays_are_taken(tmp_path: Path) -> None:
    """Three requests of 1, 2 and 4 rows in one batch, the way the batcher hands them over; the
    inputs as the wire decoder makes them (``numpy.frombuffer``: read-only views)."""
    runtime = loaded(write_scorer(tmp_path))
    requests = [scorer_inputs(rows, seed) for seed, rows in enumerate((1, 2, 4))]
    parts = {name: [np.frombuffer(r[name].tobytes(), r[name].dtype).reshape(r[name].shape)
                    for r in requests] for name in ("x", "shift")}
    assert not parts["x"][0].flags.writeable
    got = runtime.predict_parts(parts)
    want = [scorer_outputs(rows, seed) for seed, rows in enumerate((1, 2, 4))]
    np.testing.assert_allclose(got["scores"], np.concatenate([w["scores"] for w in want]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["label"], np.concatenate([w["label"] for w in want]))


def test_session_threads_follow_torchs_and_run_sequentially(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runtime = loaded(write_scorer(tmp_path))
    finally:
        torch.set_num_threads(before)
    options = runtime._session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert runtime._session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]


def test_warm_up_runs_a_batch_and_unload_releases_the_session(tmp_path: Path) -> None:
    runtime = loaded(write_scorer(tmp_path))
    runtime.warm_up()
    runtime.unload()
    with pytest.raises(RuntimeNotLoaded, match="not loaded"):
        runtime.predict(scorer_inputs(1))


def test_string_tensors_pass_as_numpy_object_arrays(tmp_path: Path) -> None:
    runtime = loaded(write_string_identity(tmp_path))
    text = np.array(["héllo", "", "wörld"], dtype=object)
    got = runtime.predict({"text": text})
    assert got["same"].dtype == object and got["same"].tolist() == ["héllo", "", "wörld"]


# --- the signature checked at load --------------------------------------------------------------


def test_an_input_name_missing_from_the_graph_names_both_sides(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("inputs.0", name="features")))
    assert "input 'features' is not in model.onnx (its inputs: x, shift)" in why
    assert "model.onnx input 'x' is not in model.yaml's signature" in why


def test_an_output_missing_from_the_graph_fails(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("outputs.1", name="argmax")))
    assert "output 'argmax' is not in model.onnx (its outputs: scores, label)" in why


def test_a_graph_output_left_out_of_the_signature_is_allowed(tmp_path: Path) -> None:
    signature = {**SIGNATURE, "outputs": SIGNATURE["outputs"][1:]}
    got = loaded(write_scorer(tmp_path, signature=signature)).predict(scorer_inputs(2))
    assert set(got) == {"label"}
    np.testing.assert_array_equal(got["label"], scorer_outputs(2)["label"])


def test_a_dtype_mismatch_names_both_types(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("inputs.0", dtype="float64")))
    assert "input 'x': float64 in model.yaml, tensor(float) in model.onnx" in why
    why = load_error(write_scorer(tmp_path / "2", signature=changed("outputs.1", dtype="int32")))
    assert "output 'label': int32 in model.yaml, tensor(int64) in model.onnx" in why


def test_a_rank_mismatch_names_both_shapes(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("inputs.1", shape=["batch"])))
    assert "input 'shift': rank 1 [batch] in model.yaml, rank 2 [batch, 1] in model.onnx" in why


def test_a_fixed_dimension_that_differs_fails(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("outputs.0", shape=["batch", 5])))
    assert "output 'scores': dimension 1 is 5 in model.yaml, 3 in model.onnx" in why


def test_a_symbolic_dimension_takes_the_graphs_fixed_one(tmp_path: Path) -> None:
    signature = changed("inputs.0", shape=["batch", "features"])
    got = loaded(write_scorer(tmp_path, signature=signature)).predict(scorer_inputs(1))
    np.testing.assert_allclose(got["scores"], scorer_outputs(1)["scores"], rtol=1e-5, atol=1e-6)


def test_a_static_batch_dimension_fails_the_load(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, dynamic_batch=False))
    assert ("input 'x': model.onnx fixes the batch dimension at 1 ([1, 4]); export it "
            "dynamic, batches vary") in why
    assert "output 'label': model.onnx fixes the batch dimension at 1 ([1])" in why


def test_an_optional_input_fails_the_load(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("inputs.1", optional=True)))
    assert "input 'shift' is optional in model.yaml" in why


def test_bfloat16_is_refused_by_name(tmp_path: Path) -> None:
    why = load_error(write_scorer(tmp_path, signature=changed("inputs.0", dtype="bfloat16")))
    assert "input 'x': bfloat16 is not served by format onnx" in why


def test_every_mismatch_is_listed_at_once(tmp_path: Path) -> None:
    signature = changed("inputs.0", dtype="float64")
    signature["outputs"][0]["name"] = "logits"
    why = load_error(write_scorer(tmp_path, signature=signature))
    assert "input 'x': float64" in why and "output 'logits' is not in model.onnx" in why


# --- other load failures ------------------------------------------------------------------------


def test_format_onnx_without_an_artifact_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"format onnx needs 'artifact' \(the "
                                                       r"\.onnx file\)"):
        ModelConfig.model_validate({"name": "m", "version": 1, "format": "onnx",
                                    "signature": SIGNATURE})


def test_a_file_that_is_not_onnx_fails_the_load(tmp_path: Path) -> None:
    directory = write_scorer(tmp_path)
    (directory / "model.onnx").write_bytes(b"not a protobuf")
    invalid = ort.capi.onnxruntime_pybind11_state.InvalidProtobuf
    with pytest.raises(invalid, match=r"INVALID_PROTOBUF .*model\.onnx"):
        runtime_of(directory).load()


def test_without_onnxruntime_the_load_names_the_extra(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``sys.modules[name] = None`` makes ``import onnxruntime`` raise ImportError, as it does
    where the package is not installed."""
    runtime = runtime_of(write_scorer(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match="format onnx needs the onnx extra") as failed:
        runtime.load()
    assert INSTALL in str(failed.value)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="this onnxruntime has the CUDA provider")
def test_cuda_without_the_cuda_provider_fails_the_load(tmp_path: Path) -> None:
    """A torch.device('cuda') is only a name: no CUDA is needed to build the context, and the
    onnx runtime stages nothing through torch, so the provider check is what fails."""
    directory = write_scorer(tmp_path)
    config = ModelConfig.model_validate(yaml.safe_load((directory / "model.yaml").read_text()))
    runtime = OnnxRuntime(RuntimeContext(config, directory, torch.device("cuda")))
    assert runtime.transfer is None
    with pytest.raises(RuntimeError, match=r"needs onnxruntime's CUDAExecutionProvider, "
                                           r"which this onnxruntime lacks .*onnxruntime-gpu"):
        runtime.load()
