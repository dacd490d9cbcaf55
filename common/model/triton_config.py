"""Triton's model configuration (its JSON form) read as a model.yaml override: what a load with
``config`` (``POST /v2/repository/models/{m}/load``, ``RepositoryModelLoad``) asks of a version.

- ``max_batch_size`` → ``batching.max_batch_size`` (within model.yaml's bounds: every Inferno
  model batches along its first dimension, so Triton's 0, no batching, is refused).
- ``dynamic_batching.max_queue_delay_microseconds`` → ``batching.max_batch_latency_ms`` with
  ``wait: fill``: Triton's delay is how long a request waits for a fuller batch, which only the
  fill wait does. A delay of 0 (or ``dynamic_batching: {}``) is ``wait: greedy``. The delay the
  model's configuration shows leaves batching as it is: a configuration read from the server
  loads unchanged. Without ``dynamic_batching``, batching is model.yaml's.
- ``instance_group``: one group; ``count`` → ``concurrency.max_concurrency``; ``kind``
  ``KIND_GPU`` / ``KIND_CPU`` / ``KIND_AUTO`` → ``device`` ``cuda`` / ``cpu`` / ``auto`` (the kind
  shown leaves the device as it is).
- ``name``, ``platform``, ``backend``, ``input``, ``output``: accepted only as the model's
  configuration shows them. A configuration cannot rename a model, change its runtime or its
  signature: the artifact defines those.
- Any other field is refused, naming it. Integers may be JSON numbers or strings of digits
  (protobuf's JSON form of 64-bit integers, as ``tritonclient.grpc`` writes a configuration).

The override holds only what differs from the repository's model.yaml, as canonical JSON (sorted
keys), so that the same configuration loaded twice is the same override.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from common.errors import InvalidInput
from common.model.config import Device, ModelConfig

__all__ = ["override_from_triton"]

WHERE = "parameters.config"
_READ = ("name, platform, backend, max_batch_size, input, output, "
         "dynamic_batching.max_queue_delay_microseconds, instance_group[0].count and .kind")
_SIGNATURE = "a configuration cannot change the signature (the model's artifact defines it)"
_DEVICES = {"KIND_GPU": Device.CUDA, "KIND_CPU": Device.CPU, "KIND_AUTO": Device.AUTO}
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")

Setting = tuple[str, object, object]
"""(Triton's field, the value it was given, the value it means in model.yaml)."""


def override_from_triton(text: str, base: ModelConfig, shown: Mapping[str, Any]) -> str:
    """The override (``ModelConfig.with_override``'s JSON; ``""``: none) that the configuration
    ``text`` asks of ``base``, the repository's version, whose configuration is ``shown`` (as
    ``GET .../config`` shows it without an override). ``InvalidInput`` naming the field for
    anything malformed, unsupported or out of model.yaml's bounds."""
    try:
        asked = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{WHERE} is not valid JSON: {exc}") from None
    if not isinstance(asked, dict):
        raise InvalidInput(f"{WHERE} must be a JSON object (Triton's model configuration), "
                           f"not {type(asked).__name__}")
    settings: dict[str, Setting] = {}
    """model.yaml's location → what sets it."""
    for key, value in asked.items():
        if key in ("name", "platform", "backend"):
            if value != shown[key]:
                raise InvalidInput(f"{WHERE}.{key} is {value!r}, but the model's is "
                                   f"{shown[key]!r}: a configuration cannot change it")
        elif key in ("input", "output"):
            _same_tensors(key, value, shown[key])
        elif key == "max_batch_size":
            size = _integer(value, key)
            settings["batching.max_batch_size"] = (key, value, size)
        elif key == "dynamic_batching":
            settings.update(_dynamic_batching(value, shown))
        elif key == "instance_group":
            settings.update(_instance_group(value, shown))
        else:
            raise _unsupported(key)
    return _override(base, settings)


def _override(base: ModelConfig, settings: dict[str, Setting]) -> str:
    """The override of what ``settings`` change in ``base``, validated against model.yaml."""
    fragment: dict[str, Any] = {}
    for location, (_, _, value) in settings.items():
        section, _, key = location.rpartition(".")
        current = getattr(getattr(base, section), key) if section else getattr(base, key)
        if value != current:
            if section:
                fragment.setdefault(section, {})[key] = value
            else:
                fragment[key] = value
    override = orjson.dumps(fragment, option=orjson.OPT_SORT_KEYS).decode() if fragment else ""
    try:
        base.with_override(override)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(p) for p in error["loc"])
        field, given, _ = settings.get(location, (location, None, None))
        raise InvalidInput(f"{WHERE}.{field}: {given!r} is refused (model.yaml's {location}: "
                           f"{error['msg']})") from None
    return override


def _dynamic_batching(value: object, shown: Mapping[str, Any]) -> dict[str, Setting]:
    field = "dynamic_batching.max_queue_delay_microseconds"
    group = _object(value, "dynamic_batching", {"max_queue_delay_microseconds"})
    given = group.get("max_queue_delay_microseconds", 0)
    delay = _integer(given, field)
    if delay == shown["dynamic_batching"]["max_queue_delay_microseconds"]:
        return {}
    return {"batching.max_batch_latency_ms": (field, given, delay / 1000),
            "batching.wait": (field, given, "fill" if delay else "greedy")}


def _instance_group(value: object, shown: Mapping[str, Any]) -> dict[str, Setting]:
    if not isinstance(value, list) or len(value) != 1:
        count = len(value) if isinstance(value, list) else type(value).__name__
        raise InvalidInput(f"{WHERE}.instance_group must be a list of one group (a version "
                           f"runs as one group of instances), not {count}")
    group = _object(value[0], "instance_group[0]", {"count", "kind"})
    settings: dict[str, Setting] = {}
    if "count" in group:
        field = "instance_group[0].count"
        settings["concurrency.max_concurrency"] = (field, group["count"],
                                                   _integer(group["count"], field))
    kind = group.get("kind", shown["instance_group"][0]["kind"])
    if kind != shown["instance_group"][0]["kind"]:
        device = _DEVICES.get(kind) if isinstance(kind, str) else None
        if device is None:
            raise InvalidInput(f"{WHERE}.instance_group[0].kind is {kind!r}, not one of "
                               f"{', '.join(_DEVICES)}")
        settings["device"] = ("instance_group[0].kind", kind, device.value)
    return settings


def _same_tensors(key: str, value: object, shown: list[dict[str, Any]]) -> None:
    """``value`` (``input`` or ``output``) says what ``shown`` does, or the first difference."""
    if not isinstance(value, list):
        raise InvalidInput(f"{WHERE}.{key} must be a list of tensors, not "
                           f"{type(value).__name__}")
    have = {t["name"]: t for t in shown}
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        tensor = _object(item, where, {"name", "data_type", "dims"})
        name = tensor.get("name")
        want = have.get(name) if isinstance(name, str) else None
        if want is None:
            raise InvalidInput(f"{WHERE}.{where}.name is {name!r}, not one of the "
                               f"model's {key}s ({', '.join(have)}): {_SIGNATURE}")
        dims = [_integer(d, f"{where}.dims") for d in _list(tensor.get("dims", []), where)]
        for field, given in (("data_type", tensor.get("data_type", want["data_type"])),
                             ("dims", dims if "dims" in tensor else want["dims"])):
            if given != want[field]:
                raise InvalidInput(f"{WHERE}.{where}.{field} is {given!r}, but {key} "
                                   f"'{want['name']}' has {want[field]!r}: {_SIGNATURE}")
    names = sorted(str(t.get("name")) for t in value)
    if names != sorted(have):
        raise InvalidInput(f"{WHERE}.{key} names {', '.join(names) or 'no tensor'}, but the "
                           f"model's {key}s are {', '.join(have)}: {_SIGNATURE}")


def _object(value: object, where: str, fields: set[str]) -> dict[str, Any]:
    """``value`` as a JSON object holding no field outside ``fields``."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{WHERE}.{where} must be an object, not {type(value).__name__}")
    for key in value:
        if key not in fields:
            raise _unsupported(f"{where}.{key}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"{WHERE}.{where}.dims must be a list, not {type(value).__name__}")
    return value


def _integer(value: object, field: str) -> int:
    """A JSON integer, or a string of one (protobuf's JSON form of 64-bit integers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    raise InvalidInput(f"{WHERE}.{field} must be an integer, not {value!r}")


def _unsupported(field: str) -> InvalidInput:
    return InvalidInput(f"{WHERE}: unsupported field '{field}' (Inferno reads {_READ}; a "
                        f"model's other settings are its model.yaml's)")
