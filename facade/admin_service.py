"""Admin operations: write the desired state, then wait until live workers report it.

``activate`` loads first and switches the active version only once a worker serves it, so requests
in flight keep going to the old version and new ones find the new version ready: a hot swap.

A load carries the version's configuration override (``ModelState.overrides``, ``""`` for its
model.yaml as it is), so a load with another one reloads the version where it runs; it returns
once every live worker serving the version reports it running with that override.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from common.errors import AdminTimeout, ModelFailed, ModelNotLoaded
from common.state.store import StateStore
from facade.cluster_view import ClusterView
from facade.model_files import write_version

__all__ = ["AdminService"]

log = logging.getLogger(__name__)


class AdminService:
    def __init__(self, store: StateStore, view: ClusterView, timeout_s: float,
                 allow_model_files: bool = False) -> None:
        self._store = store
        self._view = view
        self._timeout = timeout_s
        self.allow_model_files = allow_model_files
        """``INFERNO_ALLOW_MODEL_FILES``: whether a load may carry model files."""

    async def load(self, name: str, version: int | None, override: str = "") -> dict[str, Any]:
        """Load a version (default: the newest) with ``override`` (``""``: its model.yaml as
        it is); the first loaded version becomes active."""
        if version is not None:
            await self._view.replicate(name, version)
        version = self._view.repository.get(name, version).config.version
        await self._store.set_desired(name, version, loaded=True, override=override)
        await self._await_loaded(name, version, override)
        state = self._view.models.get(name)
        if state is None or state.active is None:
            await self._store.set_active(name, version)
        return await self.describe(name)

    async def add_version(self, name: str, files: Mapping[str, object]) -> int:
        """A load's model files (``facade.model_files``) as a new version of ``name``, written
        here and kept in the state store for the replicas with a repository of their own
        (``common.model.shared_versions``); its number."""
        version, contents = await write_version(self._view.repository, name, files)
        await self._store.put_version_files(name, version, contents)
        return version

    async def unload(self, name: str, version: int | None) -> dict[str, Any]:
        """Unload one version, or every loaded version when none is named."""
        self._view.repository.versions(name)
        state = self._view.models.get(name)
        loaded = sorted(state.desired) if state else []
        versions = loaded if version is None else [version]
        if version is not None and version not in loaded:
            raise ModelNotLoaded(f"Model '{name}' version {version} is not loaded "
                                 f"(loaded: {', '.join(map(str, loaded)) or 'none'})", name)
        for v in versions:
            await self._store.set_desired(name, v, loaded=False)
        gone = await self._view.wait_for(
            lambda: True if not any(self._view.serving(name, v) for v in versions) else None,
            self._timeout)
        if gone is None:
            raise AdminTimeout(f"Workers still serve model '{name}' version(s) "
                               f"{versions} after {self._timeout:g}s")
        return await self.describe(name)

    async def activate(self, name: str, version: int) -> dict[str, Any]:
        """Load ``version`` if needed, then route unpinned requests to it."""
        await self._view.replicate(name, version)
        self._view.repository.get(name, version)
        await self._store.set_desired(name, version, loaded=True)
        await self._await_loaded(name, version, None)
        await self._store.set_active(name, version)
        await self._view.wait_for(
            lambda: True if self._active(name) == version else None, self._timeout)
        return await self.describe(name)

    async def describe(self, name: str) -> dict[str, Any]:
        await self._view.refresh()
        state = self._view.models.get(name)
        return {"name": name, "active": state.active if state else None,
                "loaded": sorted(state.desired) if state else []}

    def _active(self, name: str) -> int | None:
        state = self._view.models.get(name)
        return state.active if state else None

    async def _await_loaded(self, name: str, version: int, override: str | None) -> None:
        """Until a live worker serves the version, and every one that does with ``override``
        (``None``: whichever it has); a load failure reported meanwhile is rolled back."""
        key = f"{name}:{version}"
        since = time.time()

        def outcome() -> str | None:
            runs = [w.overrides.get(key, "") for w in self._view.workers
                    if w.serves(name, version)]
            if runs and (override is None or all(o == override for o in runs)):
                return ""
            for worker in self._view.workers:
                attempt = worker.failed.get(key)
                if attempt is not None and attempt[0] >= since:
                    return attempt[1]
            return None

        result = await self._view.wait_for(outcome, self._timeout)
        if result is None:
            raise AdminTimeout(f"No live worker reported model '{name}' version {version} "
                               f"loaded{' with the configuration asked' if override else ''} "
                               f"within {self._timeout:g}s")
        if result:
            await self._store.set_desired(name, version, loaded=False)
            await self._view.refresh()  # the caller's next read sees the rollback
            raise ModelFailed(f"Model '{name}' version {version} failed to load: {result}",
                              loading=name)
