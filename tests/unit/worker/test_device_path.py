"""The device path of a runtime (worker/device_buffers.py): reused host staging buffers, one copy
per input and per output, one synchronisation per batch, a lease per batch in flight.

The staging runs on the CPU as well (``DeviceTransfer(cpu, pin=False)``: the "device" copy is a
real copy), so these tests check reuse, growth, copy counts and isolation without a GPU; the
tests marked ``needs_cuda`` run the same path on CUDA with pinned buffers (bench/gpu_check.sh).
"""

from __future__ import annotations

import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from common.model.config import Device
from common.model.dtypes import float_to_bf16_bits
from common.model.repository import ModelRepository
from worker.device_buffers import DeviceTransfer, HostStaging, stageable
from worker.runtime import Runtime, create_runtime

MAIN = Path(__file__).resolve().parents[3]
TEST_MODELS = MAIN / "tests" / "models"
SAMPLE_MODELS = MAIN / "models"
CPU = torch.device("cpu")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Both batches must be inside the model at once: each waits for the other (a barrier, no sleep).
TWO_AT_ONCE = """
    import threading

    BARRIER = threading.Barrier(2, timeout=10)

    def create(context):
        def predict(inputs):
            BARRIER.wait()
            return {"y": inputs["x"] * 2}
        return predict
"""
ECHO = """
    def create(context):
        return lambda inputs: {"y": inputs["x"]}
"""
FAILING = """
    def create(context):
        def predict(inputs):
            if bool((inputs["x"] < 0).any()):
                raise ValueError("negative input")
            return {"y": inputs["x"] + 1}
        return predict
"""


def model(root: Path, name: str, code: str, concurrency: int = 1, max_batch: int = 8) -> Path:
    directory = root / name / "1"
    directory.mkdir(parents=True)
    config = {"name": name, "version": 1, "format": "python", "entrypoint": "model:create",
              "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3]}],
                            "outputs": [{"name": "y", "dtype": "float32",
                                         "shape": ["batch", 3]}]},
              "batching": {"max_batch_size": max_batch},
              "concurrency": {"max_concurrency": concurrency}}
    (directory / "model.yaml").write_text(yaml.safe_dump(config))
    (directory / "model.py").write_text(textwrap.dedent(code))
    return root


def staged(root: Path, name: str, device: torch.device = CPU,
           transfer: DeviceTransfer | None = None) -> Runtime:
    """A loaded runtime whose batches go through ``transfer`` (default: unpinned, on the CPU)."""
    repository = ModelRepository(root)
    repository.scan()
    entry = repository.get(name, None)
    plain = create_runtime(entry.config, entry.directory, Device(device.type))
    runtime = type(plain)(plain.context, transfer or DeviceTransfer(device, pin=False))
    runtime.load()
    return runtime


def rows(count: int, start: float = 0) -> np.ndarray:
    return (np.arange(count * 3, dtype=np.float32) + start).reshape(count, 3)


# --- HostStaging ---------------------------------------------------------------------------------


def test_a_buffer_is_reused_across_batches_and_a_smaller_batch_is_a_view_of_it() -> None:
    staging = HostStaging(pin=False)
    first = staging.gather("x", [rows(4)])
    address = staging.buffer("x").data_ptr()

    smaller = staging.gather("x", [rows(2, 100)])

    assert first.data_ptr() == smaller.data_ptr() == address
    assert staging.allocations == 1 and staging.capacity("x") == 12
    assert smaller.shape == (2, 3)
    np.testing.assert_array_equal(smaller.numpy(), rows(2, 100))


def test_a_buffer_grows_for_a_larger_batch_and_keeps_that_size() -> None:
    staging = HostStaging(pin=False)
    staging.gather("x", [rows(2)])

    larger = staging.gather("x", [rows(5, 7)])
    np.testing.assert_array_equal(larger.numpy(), rows(5, 7))
    again = staging.gather("x", [rows(3)])

    assert staging.allocations == 2 and staging.capacity("x") == 15
    assert again.data_ptr() == larger.data_ptr() == staging.buffer("x").data_ptr()
    np.testing.assert_array_equal(again.numpy(), rows(3))


def test_several_requests_are_concatenated_straight_into_the_buffer() -> None:
    staging = HostStaging(pin=False)
    staging.gather("x", [rows(4)])
    parts = [rows(1, 10), rows(2, 20)]

    batch = staging.gather("x", parts)

    assert batch.data_ptr() == staging.buffer("x").data_ptr() and staging.allocations == 1
    np.testing.assert_array_equal(batch.numpy(), np.concatenate(parts))


def test_each_input_and_dtype_has_its_own_buffer() -> None:
    staging = HostStaging(pin=False)
    ints = staging.gather("ids", [np.arange(6, dtype=np.int64).reshape(2, 3)])
    floats = staging.gather("x", [rows(2)])
    assert ints.dtype == torch.int64 and floats.dtype == torch.float32
    assert staging.buffer("ids").data_ptr() != staging.buffer("x").data_ptr()
    # The same name with another dtype (not from one signature, but never a reinterpretation).
    halves = staging.gather("x", [rows(2).astype(np.float16)])
    assert halves.dtype == torch.float16 and staging.allocations == 3


def test_only_numbers_in_native_byte_order_are_staged() -> None:
    assert stageable(rows(1)) and stageable(np.zeros(2, np.bool_))
    assert not stageable(np.array([b"ab"], dtype=object))
    assert not stageable(np.zeros(2, np.dtype(">f4")))


# --- the runtime's staged path --------------------------------------------------------------------


def test_a_batch_makes_one_copy_per_input_and_output_and_one_synchronisation() -> None:
    runtime = staged(TEST_MODELS, "echo16")
    assert runtime.transfer is not None
    stats = runtime.transfer.stats
    bf16 = float_to_bf16_bits(np.array([[1.0, -2.0, 3.140625], [0.5, 8.0, -0.25]], np.float32))
    fp16 = np.array([[0.5, -1.0, 2.0], [4.0, 1.5, -3.0]], np.float16)

    out = runtime.predict({"bf16": bf16, "fp16": fp16})

    np.testing.assert_array_equal(out["bf16"], bf16)
    np.testing.assert_array_equal(out["fp16"], fp16)
    np.testing.assert_array_equal(out["bf16_f32"], [[1.0, -2.0, 3.140625], [0.5, 8.0, -0.25]])
    assert out["bf16"].dtype == np.uint16 and out["fp16"].dtype == np.float16
    # 2 inputs: 2 copies into the buffers and 2 to the device; 4 outputs: 4 back; 1 wait.
    assert (stats.host_copies, stats.to_device, stats.to_host, stats.synchronizations) == (
        2, 2, 4, 1)
    runtime.predict({"bf16": bf16[:1], "fp16": fp16[:1]})
    assert (stats.host_copies, stats.to_device, stats.to_host, stats.synchronizations) == (
        4, 4, 8, 2)


def test_a_batch_of_several_requests_is_copied_once_straight_into_the_buffer(
        tmp_path: Path) -> None:
    runtime = staged(model(tmp_path, "echo", ECHO), "echo")
    transfer = runtime.transfer
    assert transfer is not None
    parts = [rows(1, 0), rows(2, 100), rows(3, 200)]

    y = runtime.predict_parts({"x": parts})["y"]

    np.testing.assert_array_equal(y, np.concatenate(parts))
    # One host copy (into the staging buffer, which holds the whole batch), not a concatenation
    # first and a copy of it after.
    assert (transfer.stats.host_copies, transfer.stats.to_device) == (1, 1)
    with transfer.batch() as batch:
        np.testing.assert_array_equal(batch.staging.buffer("x")[:18].numpy().reshape(6, 3),
                                      np.concatenate(parts))


def test_consecutive_batches_reuse_one_staging_and_its_buffers(tmp_path: Path) -> None:
    runtime = staged(model(tmp_path, "echo", ECHO), "echo")
    transfer = runtime.transfer
    assert transfer is not None
    runtime.predict({"x": rows(4)})
    with transfer.batch() as batch:
        address = batch.staging.buffer("x").data_ptr()
        allocations = batch.staging.allocations

    for count in (1, 3, 4):
        np.testing.assert_array_equal(runtime.predict({"x": rows(count, count)})["y"],
                                      rows(count, count))

    assert transfer.slots == 1
    with transfer.batch() as batch:
        assert batch.staging.buffer("x").data_ptr() == address
        assert batch.staging.allocations == allocations


def test_a_reply_is_never_overwritten_by_the_next_batch(tmp_path: Path) -> None:
    # The echo model hands back the device copy of its input: the output must not be (a view
    # of) the staging buffer the next batch writes into.
    runtime = staged(model(tmp_path, "echo", ECHO), "echo")
    first = runtime.predict({"x": rows(3, 1)})["y"]

    second = runtime.predict({"x": rows(3, 50)})["y"]

    np.testing.assert_array_equal(first, rows(3, 1))
    np.testing.assert_array_equal(second, rows(3, 50))
    assert not np.shares_memory(first, second)


def test_the_cpu_path_stays_zero_copy(tmp_path: Path) -> None:
    repository = ModelRepository(model(tmp_path, "echo", ECHO))
    repository.scan()
    entry = repository.get("echo", None)
    runtime = create_runtime(entry.config, entry.directory, Device.CPU)
    runtime.load()
    x = rows(2)

    y = runtime.predict({"x": x})["y"]

    assert runtime.transfer is None
    assert np.shares_memory(x, y)  # the model saw the numpy memory itself


def test_concurrent_batches_hold_stagings_of_their_own(tmp_path: Path) -> None:
    runtime = staged(model(tmp_path, "pair", TWO_AT_ONCE, concurrency=2), "pair")
    transfer = runtime.transfer
    assert transfer is not None
    inputs = [rows(2, 0), rows(3, 1000)]

    with ThreadPoolExecutor(2) as pool:  # the worker's pool for max_concurrency 2
        results = list(pool.map(lambda x: runtime.predict({"x": x})["y"], inputs))

    assert transfer.slots == 2
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    # Both stagings back in the pool: the next two concurrent batches create none.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda x: runtime.predict({"x": x}), inputs))
    assert transfer.slots == 2


def test_a_failed_batch_gives_its_staging_back_after_synchronising(tmp_path: Path) -> None:
    runtime = staged(model(tmp_path, "failing", FAILING), "failing")
    transfer = runtime.transfer
    assert transfer is not None

    with pytest.raises(ValueError, match="negative input"):
        runtime.predict({"x": -rows(2, 1)})
    assert transfer.stats.synchronizations == 1

    np.testing.assert_array_equal(runtime.predict({"x": rows(2)})["y"], rows(2) + 1)
    assert transfer.slots == 1 and transfer.stats.synchronizations == 2


def test_warm_up_sizes_a_staging_per_runner_for_the_largest_batch(tmp_path: Path) -> None:
    runtime = staged(model(tmp_path, "pair", ECHO, concurrency=3, max_batch=16), "pair")
    transfer = runtime.transfer
    assert transfer is not None

    runtime.warm_up()

    assert transfer.slots == 3
    leases: list[Any] = []
    with transfer.batch() as a, transfer.batch() as b, transfer.batch() as c:
        leases = [a.staging, b.staging, c.staging]
        assert transfer.slots == 3  # three batches at once, none created
    assert all(s.capacity("x") == 16 * 3 for s in leases)
    allocations = [s.allocations for s in leases]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: runtime.predict({"x": rows(16)}), range(3)))
    assert [s.allocations for s in leases] == allocations  # a full batch allocated nothing


# --- CUDA --------------------------------------------------------------------------------------


@needs_cuda
def test_cuda_batches_go_through_reused_pinned_buffers() -> None:
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    entry = repository.get("mlp", 1)
    on_cuda = create_runtime(entry.config, entry.directory, Device.CUDA)
    on_cuda.load()
    on_cpu = create_runtime(entry.config, entry.directory, Device.CPU)
    on_cpu.load()
    transfer = on_cuda.transfer
    assert transfer is not None and transfer.pin
    rng = np.random.default_rng(3)

    addresses = set()
    for count in (8, 2, 5):
        x = rng.standard_normal((count, 256)).astype(np.float32)
        got, want = on_cuda.predict({"x": x}), on_cpu.predict({"x": x})
        np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(got["label"], want["label"])
        with transfer.batch() as batch:
            assert batch.staging.buffer("x").is_pinned()
            addresses.add(batch.staging.buffer("x").data_ptr())
    assert len(addresses) == 1 and transfer.slots == 1
    assert transfer.stats.synchronizations == 3 + 3  # a batch each, and each empty lease above


@needs_cuda
def test_cuda_concurrent_batches_on_their_own_streams(tmp_path: Path) -> None:
    cuda = torch.device("cuda")
    runtime = staged(model(tmp_path, "pair", TWO_AT_ONCE, concurrency=2), "pair", cuda,
                     DeviceTransfer(cuda))
    inputs = [rows(2, 0), rows(3, 1000)]
    for _ in range(20):
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda x: runtime.predict({"x": x})["y"], inputs))
        for x, y in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(y, x * 2)
    assert runtime.transfer is not None and runtime.transfer.slots == 2


@needs_cuda
def test_cuda_warm_up_runs_the_largest_batch() -> None:
    repository = ModelRepository(TEST_MODELS)
    repository.scan()
    entry = repository.get("echo16", None)
    runtime = create_runtime(entry.config, entry.directory, Device.CUDA)
    runtime.load()
    runtime.warm_up()
    assert runtime.transfer is not None
    with runtime.transfer.batch() as batch:
        assert batch.staging.capacity("bf16") >= entry.config.batching.max_batch_size
