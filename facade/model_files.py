"""Model files in a repository load (Triton's ``file:<version>/<path>`` load parameters, with
``INFERNO_ALLOW_MODEL_FILES=true``): checked, then written as one new version directory.

Every key names the same new version ``<v>`` of the model and ``<v>/model.yaml`` is among them;
paths are relative and plain (no ``..``, no backslash, no empty component). The files go to a
temporary directory inside the model's directory, which is renamed to ``<v>`` whole
(``common.model.shared_versions``, which also writes the version on other replicas from the
state store's copy): a scan never sees half a version, and an existing version is never
overwritten. The new model.yaml is read as a scan reads it (``ModelRepository.add``); if it is
refused, the directory goes again.
The total size is bounded by the request body's (``INFERNO_MAX_BODY_BYTES``, REST and gRPC).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from pathlib import PurePosixPath

from common.errors import InvalidInput
from common.model.repository import ModelRepository
from common.model.shared_versions import add_version

__all__ = ["FILE_PREFIX", "MAX_FILES", "write_version"]

FILE_PREFIX = "file:"
MAX_FILES = 1000
_VERSION = re.compile(r"[1-9][0-9]*")


async def write_version(repository: ModelRepository, name: str,
                        files: Mapping[str, object]) -> tuple[int, dict[str, bytes]]:
    """Write ``files`` (``file:<v>/<path>`` → base64 text, or bytes over gRPC) as version ``v``
    of ``name``, a model of ``repository``, and add it there: ``v`` and each file's path under
    it with its bytes. ``InvalidInput`` naming the key for a bad one, or the problem of the
    written model.yaml (the version is then removed)."""
    repository.versions(name)  # ModelNotFound for a model the repository lacks
    version, contents = _checked(files)
    model_dir = repository.root / name
    if repository.holds(name, version) or (model_dir / str(version)).exists():
        raise _exists(name, version)
    try:
        await add_version(repository, name, version, contents)
    except FileExistsError:
        raise _exists(name, version) from None
    return version, contents


def _checked(files: Mapping[str, object]) -> tuple[int, dict[str, bytes]]:
    """The one version the keys name, and each file's path (under it) and bytes."""
    if len(files) > MAX_FILES:
        raise InvalidInput(f"parameters: {len(files)} files in one load, at most {MAX_FILES}")
    versions: set[str] = set()
    contents: dict[str, bytes] = {}
    for key, value in files.items():
        path = _path_of(key)
        versions.add(path.parts[0])
        if len(versions) > 1:
            raise InvalidInput(f"parameters.{key}: every file of a load belongs to one new "
                               f"version, here {' and '.join(sorted(versions))}")
        contents[str(path.relative_to(path.parts[0]))] = _bytes_of(key, value)
    [first] = versions
    if "model.yaml" not in contents:
        raise InvalidInput(f"parameters.{FILE_PREFIX}{first}/model.yaml is missing: a version's "
                           f"files include its model.yaml")
    return int(first), contents


def _path_of(key: str) -> PurePosixPath:
    """``file:<v>/<relative path>`` checked: a plain relative path under a version ≥ 1."""
    text = key.removeprefix(FILE_PREFIX)
    parts = text.split("/")
    if ("\\" in text or "\0" in text or text.startswith("/")
            or any(p in ("", ".", "..") for p in parts)):
        raise InvalidInput(f"parameters.{key}: a file's path is relative, without '..', '.', "
                           f"empty components or backslashes")
    if len(parts) < 2 or not _VERSION.fullmatch(parts[0]):
        raise InvalidInput(f"parameters.{key}: a file's path starts with its version (an "
                           f"integer, at least 1): file:<version>/<path>")
    return PurePosixPath(*parts)


def _bytes_of(key: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"parameters.{key} must be the file's bytes in base64, "
                           f"not {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidInput(f"parameters.{key} is not valid base64") from None


def _exists(name: str, version: int) -> InvalidInput:
    return InvalidInput(f"parameters.{FILE_PREFIX}{version}/model.yaml: model '{name}' already "
                        f"has version {version}: a load never overwrites one")
