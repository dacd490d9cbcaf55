"""The system shared memory registry (facade/shared_memory.py) on real /dev/shm objects made by
tritonclient's utilities: keys, bounds, copies, and what a refusal leaves untouched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm
from pydantic import ValidationError
from tritonclient.utils import serialize_byte_tensor, serialized_byte_size

from common.errors import InvalidInput
from common.model.dtypes import DType
from common.settings import FacadeSettings, SharedMemoryKind
from facade.errors import HttpError
from facade.shared_memory import OFF, RegionRef, SharedMemoryRegistry, region_ref
from tests.shared_memory import Regions, path_of, regions_fixture  # noqa: F401 - the fixture

X = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.fixture
def registry() -> Iterator[SharedMemoryRegistry]:
    made = SharedMemoryRegistry(enabled=True)
    yield made
    made.close()


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidInput) as raised:
        call(*args)
    return raised.value.message


def test_register_status_and_unregister(registry: SharedMemoryRegistry,
                                        regions: Regions) -> None:
    key, _ = regions.create("a", 64)
    other, _ = regions.create("b", 8192)
    registry.register("a", key, 0, 64)
    registry.register("b", other, 4100, 4000)  # an offset inside a page: mapped from its page
    assert registry.status() == [{"name": "a", "key": key, "offset": 0, "byte_size": 64},
                                 {"name": "b", "key": other, "offset": 4100, "byte_size": 4000}]
    assert registry.status("b") == [registry.status()[1]]
    assert refused(registry.register, "a", other, 0, 8) == (
        "shared memory region 'a' already in manager")
    registry.unregister("a")
    registry.unregister("a")  # gone already: nothing to do, as in Triton
    with pytest.raises(HttpError) as unknown:
        registry.status("a")
    assert (unknown.value.status_code, unknown.value.message) == (
        404, "Unable to find system shared memory region: 'a'")
    registry.unregister()
    assert registry.status() == []


@pytest.mark.parametrize("key", ["/a/b", "a", "/", "/..", "/../etc/passwd", "/x..y", "/a\0b",
                                 "//x", "/" + "k" * 256, "/sp ace"])
def test_a_key_must_be_one_posix_name(registry: SharedMemoryRegistry, key: str) -> None:
    assert "is not a POSIX shared memory name" in refused(registry.register, "r", key, 0, 8)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "é"])
def test_a_region_name_is_refused_unless_plain(registry: SharedMemoryRegistry,
                                               name: str) -> None:
    assert "shared memory region name" in refused(registry.register, name, "/k", 0, 8)


def test_a_region_must_lie_within_its_object(registry: SharedMemoryRegistry,
                                             regions: Regions) -> None:
    key, _ = regions.create("r", 64)
    assert refused(registry.register, "r", key, 60, 8) == (
        f"shared memory key '{key}' holds 64 bytes: offset 60 and byte size 8 reach past its end")
    assert "byte_size a positive one" in refused(registry.register, "r", key, 0, 0)
    assert "byte_size a positive one" in refused(registry.register, "r", key, -1, 8)
    assert "No such file or directory" in refused(registry.register, "r", key + "x", 0, 8)
    assert registry.status() == []


def test_a_symbolic_link_under_dev_shm_is_not_followed(registry: SharedMemoryRegistry,
                                                       regions: Regions, tmp_path: Any) -> None:
    key, _ = regions.create("r", 64)
    target = tmp_path / "secret"
    target.write_bytes(b"s" * 64)
    link = path_of(key + "_link")
    link.symlink_to(target)
    try:
        assert "Unable to open shared memory key" in refused(
            registry.register, "r", key + "_link", 0, 8)
    finally:
        link.unlink()


def test_an_input_is_copied_out_of_its_region(registry: SharedMemoryRegistry,
                                              regions: Regions) -> None:
    key, handle = regions.create("in", 4096 + X.nbytes)
    shm.set_shared_memory_region(handle, [X], offset=4096 + 0)
    registry.register("in", key, 4000, 96 + X.nbytes)
    ref = RegionRef("in", X.nbytes, 96)
    got = registry.read_input("x", ref, DType.FLOAT32, [3, 4])
    np.testing.assert_array_equal(got, X)
    shm.set_shared_memory_region(handle, [X * 0], offset=4096)
    registry.unregister("in")  # nothing points into the mapping: it closes at once
    np.testing.assert_array_equal(got, X)


def test_strings_in_a_region(registry: SharedMemoryRegistry, regions: Regions) -> None:
    text = np.array(["héllo", "", "wörld"], dtype=object)
    data = serialize_byte_tensor(text)
    size = serialized_byte_size(data)
    key, handle = regions.create("s", size)
    shm.set_shared_memory_region(handle, [data])
    registry.register("s", key, 0, size)
    got = registry.read_input("text", RegionRef("s", size), DType.STRING, [3])
    assert got.tolist() == ["héllo", "", "wörld"]
    assert refused(registry.read_input, "text", RegionRef("s", size - 1), DType.STRING,
                   [3]) == "Input 'text': element 2 claims 6 bytes, only 5 are left"


@pytest.mark.parametrize(("ref", "says"), [
    (RegionRef("in", 48, 17), "Input 'x': offset 17 and byte size 48 reach past the end of "
                              "shared memory region 'in' (64 bytes)"),
    (RegionRef("in", 65), "Input 'x': offset 0 and byte size 65 reach past the end"),
    (RegionRef("in", 44), "Input 'x': shape [3, 4] of float32 needs 48 bytes, got 44"),
    (RegionRef("nope", 48), "Input 'x': Unable to find shared memory region: 'nope'"),
])
def test_an_input_outside_its_region_or_its_shape_is_refused(
        registry: SharedMemoryRegistry, regions: Regions, ref: RegionRef, says: str) -> None:
    key, _ = regions.create("in", 64)
    registry.register("in", key, 0, 64)
    assert says in refused(registry.read_input, "x", ref, DType.FLOAT32, [3, 4])


def test_a_shrunk_object_is_refused_not_read(registry: SharedMemoryRegistry,
                                             regions: Regions) -> None:
    key, _ = regions.create("in", 8192)
    registry.register("in", key, 4096, 4096)
    os.truncate(path_of(key), 4096)  # a fault, were the mapping read past the file's end
    assert f"ends at byte 8192 of '{key}', now 4096 bytes long" in refused(
        registry.read_input, "x", RegionRef("in", 48), DType.FLOAT32, [3, 4])


def test_outputs_are_written_only_when_all_fit(registry: SharedMemoryRegistry,
                                               regions: Regions) -> None:
    key, handle = regions.create("out", 128)
    shm.set_shared_memory_region(handle, [np.full(128, 0xEE, np.uint8)])
    registry.register("out", key, 16, 96)
    places = {"a": RegionRef("out", 48), "b": RegionRef("out", 40, 48)}
    outputs = {"a": X, "b": X}
    dtypes = {"a": DType.FLOAT32, "b": DType.FLOAT32}
    registry.check_output("a", places["a"])
    assert refused(registry.write_outputs, places, outputs, dtypes) == (
        "shared memory size specified with the request for output 'b' (40 bytes) should be at "
        "least 48 bytes to hold the results")
    untouched = shm.get_contents_as_numpy(handle, np.uint8, [128])
    assert (untouched == 0xEE).all()  # not even 'a', which fits
    places["b"] = RegionRef("out", 48, 48)
    assert registry.write_outputs(places, outputs, dtypes) == {"a": 48, "b": 48}
    written = shm.get_contents_as_numpy(handle, np.uint8, [128])
    assert (written[:16] == 0xEE).all() and (written[112:] == 0xEE).all()
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [3, 4], 16), X)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [3, 4], 64), X)
    assert "reach past the end" in refused(registry.check_output, "a", RegionRef("out", 8, 90))


@pytest.mark.parametrize(("parameters", "says"), [
    ({"shared_memory_region": 3, "shared_memory_byte_size": 8}, "must be a string"),
    ({"shared_memory_region": "r"}, "needs shared_memory_byte_size"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": -1}, "needs shared_memory_byte"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": True}, "needs shared_memory_byte"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 8, "shared_memory_offset": 1.5},
     "shared_memory_offset must be a non-negative integer"),
])
def test_malformed_region_parameters_are_refused(parameters: dict[str, Any], says: str) -> None:
    assert says in refused(region_ref, "Input 'x'", parameters)


def test_parameters_without_a_region_name_none() -> None:
    assert region_ref("Input 'x'", {"binary_data_size": 8}) is None
    assert region_ref("Input 'x'", {"shared_memory_region": "r", "shared_memory_byte_size": 8,
                                    "shared_memory_offset": 4}) == RegionRef("r", 8, 4)


def test_off_every_call_says_how_to_turn_it_on() -> None:
    calls = [(OFF.register, "r", "/k", 0, 8), (OFF.status,), (OFF.unregister,),
             (OFF.read_input, "x", RegionRef("r", 8), DType.FLOAT32, [2]),
             (OFF.check_output, "y", RegionRef("r", 8))]
    for call, *args in calls:
        assert "set INFERNO_SHARED_MEMORY=system to turn it on" in refused(call, *args)
    assert OFF.write_outputs({}, {}, {}) == {}  # no output asked into shared memory


def test_close_unmaps_every_region(regions: Regions) -> None:
    registry = SharedMemoryRegistry(enabled=True)
    key, _ = regions.create("a", 64)
    registry.register("a", key, 0, 64)
    registry.close()
    assert registry.status() == []


def test_the_setting_needs_a_single_facade_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERNO_SHARED_MEMORY", "system")
    assert FacadeSettings().shared_memory is SharedMemoryKind.SYSTEM
    with pytest.raises(ValidationError, match="needs a single facade process"):
        FacadeSettings(facade_processes=2)
