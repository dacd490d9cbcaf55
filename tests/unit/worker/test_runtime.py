"""Runtimes: TorchScript and Python models, dtype conversion at the edges, devices, load errors."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from common.model.config import Device, ModelConfig
from common.model.dtypes import DType, bf16_bits_to_float32, float_to_bf16_bits
from common.model.repository import ModelRepository
from worker.runtime import Runtime, RuntimeNotLoaded, create_runtime, resolve_device

MAIN = Path(__file__).resolve().parents[3]
TEST_MODELS = MAIN / "tests" / "models"
SAMPLE_MODELS = MAIN / "models"

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def load(root: Path, name: str, version: int | None = None,
         device: Device = Device.CPU) -> Runtime:
    repository = ModelRepository(root)
    repository.scan()
    entry = repository.get(name, version)
    runtime = create_runtime(entry.config, entry.directory, device)
    runtime.load()
    return runtime


def write_model(root: Path, config: dict[str, Any], files: dict[str, str] | None = None) -> Path:
    """A model version directory under ``root`` with model.yaml and the given files."""
    directory = root / config["name"] / str(config["version"])
    directory.mkdir(parents=True)
    (directory / "model.yaml").write_text(yaml.safe_dump(config))
    for filename, text in (files or {}).items():
        (directory / filename).write_text(textwrap.dedent(text))
    return directory


def python_config(name: str, outputs: list[dict[str, Any]], version: int = 1,
                  entrypoint: str = "model:create") -> dict[str, Any]:
    return {"name": name, "version": version, "format": "python", "entrypoint": entrypoint,
            "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", "n"]}],
                          "outputs": outputs}}


# --- TorchScript --------------------------------------------------------------------------------


def test_torchscript_sample_mlp_returns_probs_and_label() -> None:
    runtime = load(SAMPLE_MODELS, "mlp", 1)
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)

    out = runtime.predict({"x": x})

    assert sorted(out) == ["label", "probs"]
    assert out["probs"].shape == (3, 10) and out["probs"].dtype == np.float32
    assert out["label"].shape == (3,) and out["label"].dtype == np.int64
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["label"], out["probs"].argmax(axis=1))
    reference = torch.jit.load(str(SAMPLE_MODELS / "mlp" / "1" / "model.pt"))
    with torch.inference_mode():
        probs, label = reference(torch.from_numpy(x))
    np.testing.assert_allclose(out["probs"], probs.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["label"], label.numpy())


def test_warm_up_runs_a_batch_of_zeros(tmp_path: Path) -> None:
    # The model saves what each call receives: the warm-up is seen from the model's side.
    config = python_config("warm", [{"name": "y", "dtype": "float32", "shape": ["batch"]}])
    config["signature"]["inputs"].append({"name": "ids", "dtype": "int64", "shape": ["batch", 3]})
    directory = write_model(tmp_path, config, {"model.py": """
        import numpy as np
        import torch

        def create(context):
            def predict(inputs):
                call = len(list(context.directory.glob("call-*.npz")))
                np.savez(context.directory / f"call-{call}.npz",
                         **{name: tensor.numpy() for name, tensor in inputs.items()})
                return {"y": torch.zeros(len(inputs["x"]))}
            return predict
    """})
    runtime = load(tmp_path, "warm")

    runtime.warm_up()

    calls = sorted(directory.glob("call-*.npz"))
    assert len(calls) == 1, "one batch on the CPU, at batch size 1"
    seen = np.load(calls[0])
    assert sorted(seen.files) == ["ids", "x"]
    # The batch dimension and the symbolic "n" are 1; fixed dimensions keep their size.
    assert seen["x"].dtype == np.float32 and seen["x"].shape == (1, 1)
    assert seen["ids"].dtype == np.int64 and seen["ids"].shape == (1, 3)
    assert not seen["x"].any() and not seen["ids"].any()


def test_an_unloaded_runtime_refuses_to_predict() -> None:
    runtime = load(SAMPLE_MODELS, "mlp", 1)
    runtime.unload()
    with pytest.raises(RuntimeNotLoaded, match="not loaded"):
        runtime.predict({"x": np.zeros((1, 256), np.float32)})


class _Single(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "half": x / 2}


class _Three(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x, x, x


class _OptionalBias(torch.nn.Module):
    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if bias is None:
            return x
        return x + bias


def torchscript_model(root: Path, module: torch.nn.Module, outputs: list[str],
                      optional_bias: bool = False) -> Runtime:
    inputs = [{"name": "x", "dtype": "float32", "shape": ["batch", 2]}]
    if optional_bias:
        inputs.append({"name": "bias", "dtype": "float32", "shape": ["batch", 2],
                       "optional": True})
    config = {"name": "ts", "version": 1, "format": "torchscript", "artifact": "m.pt",
              "signature": {"inputs": inputs, "outputs": [
                  {"name": n, "dtype": "float32", "shape": ["batch", 2]} for n in outputs]}}
    directory = write_model(root, config)
    with warnings.catch_warnings():  # torch 2.13 deprecates scripting; loading is what we test
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(directory / "m.pt"))
    return load(root, "ts")


def test_torchscript_single_tensor_is_the_first_output(tmp_path: Path) -> None:
    runtime = torchscript_model(tmp_path, _Single(), ["y"])
    out = runtime.predict({"x": np.array([[1, 2]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[2, 4]])


def test_torchscript_dict_outputs_are_taken_by_name(tmp_path: Path) -> None:
    runtime = torchscript_model(tmp_path, _Named(), ["half", "double"])
    out = runtime.predict({"x": np.array([[2, 4]], np.float32)})
    np.testing.assert_array_equal(out["half"], [[1, 2]])
    np.testing.assert_array_equal(out["double"], [[4, 8]])


def test_torchscript_output_count_must_match_the_signature(tmp_path: Path) -> None:
    runtime = torchscript_model(tmp_path, _Three(), ["a", "b"])
    with pytest.raises(ValueError, match="returned 3 outputs, the signature declares 2"):
        runtime.predict({"x": np.zeros((1, 2), np.float32)})


def test_torchscript_optional_input_left_out_is_none(tmp_path: Path) -> None:
    runtime = torchscript_model(tmp_path, _OptionalBias(), ["y"], optional_bias=True)
    x = np.array([[1, 2]], np.float32)
    np.testing.assert_array_equal(runtime.predict({"x": x})["y"], [[1, 2]])
    with_bias = runtime.predict({"x": x, "bias": np.array([[10, 20]], np.float32)})
    np.testing.assert_array_equal(with_bias["y"], [[11, 22]])


# --- Python models ---------------------------------------------------------------------------


def test_python_sum_model() -> None:
    runtime = load(TEST_MODELS, "sum")
    out = runtime.predict({"x": np.array([[1, 2, 3], [4, 5, 6]], np.float32)})
    assert out["total"].dtype == np.float32
    np.testing.assert_array_equal(out["total"], [6, 15])


def test_bfloat16_and_float16_cross_the_runtime_bit_for_bit() -> None:
    runtime = load(TEST_MODELS, "echo16")
    values = [1.0, -2.0, 3.140625, 0.0, -0.0, 1e-38, 3.0e38, float("inf"), float("-inf")]
    bf16 = float_to_bf16_bits(np.array([values], np.float32))
    fp16 = np.array([[1.0, -2.0, 0.1, 0.0, -0.0, 6.0e-8, 65504.0, np.inf, -np.inf]], np.float16)
    bf16 = np.concatenate([bf16, np.array([[0x7FC0, 0xFFC1, 0x0001, 0x8001, 0x7F7F, 0x0080,
                                            0x3F81, 0xBF80, 0x4049]], np.uint16)])
    fp16 = np.concatenate([fp16, fp16[:, ::-1]])

    out = runtime.predict({"bf16": bf16, "fp16": fp16})

    assert out["bf16"].dtype == DType.BFLOAT16.numpy and out["fp16"].dtype == np.float16
    np.testing.assert_array_equal(out["bf16"], bf16)  # the same bit patterns, NaNs included
    np.testing.assert_array_equal(out["fp16"].view(np.uint16), fp16.view(np.uint16))
    assert out["bf16_f32"].dtype == np.float32
    np.testing.assert_array_equal(out["bf16_f32"].view(np.uint32),
                                  bf16_bits_to_float32(bf16).view(np.uint32))
    np.testing.assert_array_equal(out["fp16_f32"], fp16.astype(np.float32))


def test_outputs_are_converted_to_the_signature_dtypes(tmp_path: Path) -> None:
    write_model(tmp_path, python_config("conv", [
        {"name": "as_int", "dtype": "int32", "shape": ["batch", "n"]},
        {"name": "as_f16", "dtype": "float16", "shape": ["batch", "n"]},
        {"name": "as_bf16", "dtype": "bfloat16", "shape": ["batch", "n"]},
        {"name": "from_numpy", "dtype": "float32", "shape": ["batch", "n"]},
    ]), {"model.py": """
        import torch

        def create(context):
            def predict(inputs):
                x = inputs["x"].to(torch.float64)
                return {"as_int": x, "as_f16": x, "as_bf16": x, "from_numpy": x.numpy()}
            return predict
    """})
    runtime = load(tmp_path, "conv")
    x = np.array([[1.5, -2.0, 3.0]], np.float32)

    out = runtime.predict({"x": x})

    assert out["as_int"].dtype == np.int32
    np.testing.assert_array_equal(out["as_int"], [[1, -2, 3]])
    assert out["as_f16"].dtype == np.float16
    np.testing.assert_array_equal(out["as_f16"], x.astype(np.float16))
    np.testing.assert_array_equal(out["as_bf16"], float_to_bf16_bits(x))
    assert out["from_numpy"].dtype == np.float32
    np.testing.assert_array_equal(out["from_numpy"], x)


def test_a_numpy_float_array_for_a_bfloat16_output_is_rounded_to_bfloat16(
    tmp_path: Path,
) -> None:
    write_model(tmp_path, python_config("npbf16", [
        {"name": "y", "dtype": "bfloat16", "shape": ["batch", "n"]},
    ]), {"model.py": """
        def create(context):
            return lambda inputs: {"y": inputs["x"].numpy()}
    """})
    runtime = load(tmp_path, "npbf16")
    x = np.array([[1.5, -2.0, 3.140625]], np.float32)
    np.testing.assert_array_equal(runtime.predict({"x": x})["y"], float_to_bf16_bits(x))


def test_a_missing_output_is_an_error_naming_it(tmp_path: Path) -> None:
    write_model(tmp_path, python_config("partial", [
        {"name": "a", "dtype": "float32", "shape": ["batch", "n"]},
        {"name": "b", "dtype": "float32", "shape": ["batch", "n"]},
    ]), {"model.py": """
        def create(context):
            return lambda inputs: {"a": inputs["x"]}
    """})
    runtime = load(tmp_path, "partial")
    with pytest.raises(ValueError, match=r"no output 'b' \(returned: a\)"):
        runtime.predict({"x": np.zeros((1, 2), np.float32)})


def test_a_model_returning_something_else_than_a_dict_is_an_error(tmp_path: Path) -> None:
    write_model(tmp_path, python_config("nodict", [
        {"name": "y", "dtype": "float32", "shape": ["batch", "n"]},
    ]), {"model.py": """
        def create(context):
            return lambda inputs: inputs["x"]
    """})
    runtime = load(tmp_path, "nodict")
    with pytest.raises(TypeError, match="expected a dict of tensors"):
        runtime.predict({"x": np.zeros((1, 2), np.float32)})


def test_the_factory_receives_the_context(tmp_path: Path) -> None:
    write_model(tmp_path, python_config("ctx", [
        {"name": "y", "dtype": "float32", "shape": ["batch", "n"]},
    ]), {"model.py": """
        def create(context):
            assert context.config.name == "ctx"
            assert (context.directory / "model.yaml").is_file()
            assert str(context.device) == "cpu"
            return lambda inputs: {"y": inputs["x"]}
    """})
    runtime = load(tmp_path, "ctx")
    np.testing.assert_array_equal(runtime.predict({"x": np.ones((1, 1), np.float32)})["y"], [[1]])


def test_entrypoint_module_not_found(tmp_path: Path) -> None:
    write_model(tmp_path, python_config(
        "nomod", [{"name": "y", "dtype": "float32", "shape": ["batch", "n"]}],
        entrypoint="inferno_no_such_module_anywhere:create"))
    with pytest.raises(ModuleNotFoundError, match="inferno_no_such_module_anywhere"):
        load(tmp_path, "nomod")


def test_entrypoint_factory_must_be_callable(tmp_path: Path) -> None:
    write_model(tmp_path, python_config(
        "nofactory", [{"name": "y", "dtype": "float32", "shape": ["batch", "n"]}],
        entrypoint="model:missing"), {"model.py": "create = 42\n"})
    with pytest.raises(AttributeError, match="missing is not a callable"):
        load(tmp_path, "nofactory")


def test_entrypoint_module_is_found_on_sys_path(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "inferno_test_syspath_model.py").write_text(textwrap.dedent("""
        def create(context):
            return lambda inputs: {"y": inputs["x"] + 1}
    """))
    monkeypatch.syspath_prepend(str(lib))
    write_model(tmp_path / "repo", python_config(
        "onpath", [{"name": "y", "dtype": "float32", "shape": ["batch", "n"]}],
        entrypoint="inferno_test_syspath_model:create"))
    runtime = load(tmp_path / "repo", "onpath")
    np.testing.assert_array_equal(runtime.predict({"x": np.zeros((1, 1), np.float32)})["y"], [[1]])


def test_two_versions_model_py_never_shadow_each_other(tmp_path: Path) -> None:
    for version in (1, 2):
        write_model(tmp_path, python_config(
            "twice", [{"name": "y", "dtype": "float32", "shape": ["batch", "n"]}], version),
            {"model.py": f"""
            OFFSET = {version * 100}

            def create(context):
                return lambda inputs: {{"y": inputs["x"] + OFFSET}}
            """})
    first, second = load(tmp_path, "twice", 1), load(tmp_path, "twice", 2)
    x = np.zeros((1, 1), np.float32)
    np.testing.assert_array_equal(first.predict({"x": x})["y"], [[100]])
    np.testing.assert_array_equal(second.predict({"x": x})["y"], [[200]])


def test_a_model_module_that_fails_to_import_can_be_loaded_once_fixed(tmp_path: Path) -> None:
    directory = write_model(tmp_path, python_config(
        "flaky", [{"name": "y", "dtype": "float32", "shape": ["batch", "n"]}]),
        {"model.py": "raise RuntimeError('broken on purpose')\n"})
    with pytest.raises(RuntimeError, match="broken on purpose"):
        load(tmp_path, "flaky")
    (directory / "model.py").write_text(
        "def create(context):\n    return lambda inputs: {'y': inputs['x']}\n")
    load(tmp_path, "flaky")


# --- devices ------------------------------------------------------------------------------------


def test_resolve_device() -> None:
    assert resolve_device(Device.CPU) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(Device.AUTO).type == expected


@needs_no_cuda
def test_cuda_requested_without_cuda_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device(Device.CUDA)


@needs_no_cuda
def test_model_yaml_device_overrides_the_default(tmp_path: Path) -> None:
    config = python_config("dev", [{"name": "y", "dtype": "float32", "shape": ["batch", "n"]}])
    on_cpu = ModelConfig.model_validate({**config, "device": "cpu"})
    assert create_runtime(on_cpu, tmp_path, Device.CUDA).device == torch.device("cpu")
    on_cuda = ModelConfig.model_validate({**config, "device": "cuda"})
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        create_runtime(on_cuda, tmp_path, Device.CPU)


@needs_cuda
def test_python_and_half_precision_models_on_cuda() -> None:
    runtime = load(TEST_MODELS, "echo16", device=Device.CUDA)
    assert runtime.device.type == "cuda"
    bf16 = float_to_bf16_bits(np.array([[1.0, -2.0, 3.140625]], np.float32))
    fp16 = np.array([[0.5, -1.0, 2.0]], np.float16)
    out = runtime.predict({"bf16": bf16, "fp16": fp16})
    np.testing.assert_array_equal(out["bf16"], bf16)
    np.testing.assert_array_equal(out["fp16"], fp16)
    np.testing.assert_array_equal(out["bf16_f32"], [[1.0, -2.0, 3.140625]])
    runtime.warm_up()
    runtime.unload()


@needs_cuda
def test_torchscript_on_cuda_matches_cpu() -> None:
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    on_cpu = load(SAMPLE_MODELS, "mlp", 1).predict({"x": x})
    on_cuda = load(SAMPLE_MODELS, "mlp", 1, device=Device.CUDA).predict({"x": x})
    np.testing.assert_allclose(on_cuda["probs"], on_cpu["probs"], rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(on_cuda["label"], on_cpu["label"])


# --- strings ------------------------------------------------------------------------------------


def _string_model(root: Path, device: str = "cpu") -> Path:
    config = {"name": "echo", "version": 1, "format": "python", "entrypoint": "model:create",
              "device": device,
              "signature": {"inputs": [{"name": "text", "dtype": "string", "shape": ["batch"]},
                                       {"name": "w", "dtype": "float32", "shape": ["batch"]}],
                            "outputs": [{"name": "upper", "dtype": "string", "shape": ["batch"]},
                                        {"name": "size", "dtype": "int64", "shape": ["batch"]}]}}
    return write_model(root, config, {"model.py": """
        import torch

        def create(context):
            seen = []
            def predict(inputs):
                texts = inputs["text"]
                assert isinstance(texts, list) and all(isinstance(t, str) for t in texts)
                assert isinstance(inputs["w"], torch.Tensor)
                seen.append(list(texts))
                return {"upper": [t.upper() for t in texts],
                        "size": torch.tensor([len(t) for t in texts]) + inputs["w"].long()}
            predict.seen = seen
            return predict
        """})


def _strings(*values: str) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def test_a_python_model_takes_a_string_batch_as_a_list_and_returns_strings(
        tmp_path: Path) -> None:
    _string_model(tmp_path)
    runtime = load(tmp_path, "echo")
    out = runtime.predict({"text": _strings("héllo", "", "abc"),
                           "w": np.array([0, 1, 2], np.float32)})
    assert out["upper"].dtype == object and out["upper"].tolist() == ["HÉLLO", "", "ABC"]
    assert out["size"].tolist() == [5, 1, 5]
    runtime.warm_up()  # empty strings, not zeros
    assert runtime._fn.seen[-1] == [""]  # type: ignore[attr-defined]


def test_a_string_output_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    config = {"name": "bad", "version": 1, "format": "python", "entrypoint": "model:create",
              "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch"]}],
                            "outputs": [{"name": "y", "dtype": "string", "shape": ["batch"]}]}}
    write_model(tmp_path, config, {"model.py": """
        def create(context):
            return lambda inputs: {"y": inputs["x"]}
        """})
    runtime = load(tmp_path, "bad")
    with pytest.raises(TypeError, match="Output 'y': element 0 is not a string"):
        runtime.predict({"x": np.zeros(1, np.float32)})


@needs_cuda
def test_strings_skip_the_cuda_staging(tmp_path: Path) -> None:
    _string_model(tmp_path, "cuda")
    runtime = load(tmp_path, "echo", device=Device.CUDA)
    runtime.warm_up()
    out = runtime.predict({"text": _strings("a", "bc"), "w": np.array([1, 1], np.float32)})
    assert out["upper"].tolist() == ["A", "BC"] and out["size"].tolist() == [2, 3]
