"""Versions a load wrote (model files, ``INFERNO_ALLOW_MODEL_FILES``), in every replica's
repository.

The facade that takes a load's files writes them as a new version directory of its repository
(``add_version``) and keeps them in the state store (``StateStore.put_version_files``). A
worker or facade whose repository lacks a version the state asks for (on another host, with a
repository directory of its own) writes it from the store's copy (``replicate``) before it loads
or routes to it. Replicas sharing one repository directory find the version there already.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from common.errors import InvalidInput
from common.model.repository import ModelRepository
from common.state.store import StateStore

__all__ = ["add_version", "replicate", "write_version_dir"]


def write_version_dir(model_dir: Path, version: int, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (path under the version directory → bytes) under a temporary directory
    of ``model_dir``, then rename it to ``model_dir/<version>``: there whole or not at all.
    ``FileExistsError`` when the version is there already (never overwritten); ``ValueError``
    for a path that would leave the version directory."""
    target = model_dir / str(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    # The files sit one level deeper than a version's (``.load-*/<v>/model.yaml``): a scan
    # meanwhile does not take the temporary directory for a version.
    with tempfile.TemporaryDirectory(prefix=".load-", dir=model_dir) as temporary:
        staged = Path(temporary) / str(version)
        for path, data in files.items():
            relative = PurePosixPath(path)
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"model file {path!r} lies outside its version directory")
            file = staged / relative
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
        try:
            staged.rename(target)
        except OSError as exc:  # another load, or another replica on this directory, was first
            raise FileExistsError(f"{target} exists") from exc
    return target


async def add_version(repository: ModelRepository, name: str, version: int,
                      files: Mapping[str, bytes]) -> None:
    """Write ``files`` as ``version`` of ``name`` (``write_version_dir``) and add it to
    ``repository``; a model.yaml the repository refuses (``InvalidInput``, naming why) takes the
    directory with it."""
    written = await asyncio.to_thread(write_version_dir, repository.root / name, version, files)
    try:
        repository.add(written)
    except InvalidInput:
        await asyncio.to_thread(shutil.rmtree, written, True)
        raise


async def replicate(store: StateStore, repository: ModelRepository, name: str,
                    version: int) -> bool:
    """Whether ``repository`` holds the version, written from the state store's copy of its
    files if it lacked it and the store has them."""
    if repository.holds(name, version):
        return True
    files = await store.version_files(name, version)
    if files is None:
        return False
    try:
        await add_version(repository, name, version, files)
    except FileExistsError:  # written meanwhile by a replica sharing the directory
        repository.scan()
        return repository.holds(name, version)
    return True
