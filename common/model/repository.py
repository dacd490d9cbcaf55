"""The model repository on disk: ``<root>/<name>/<version>/model.yaml`` plus artifacts.

A malformed model.yaml is reported (file, field, reason) and skipped: one broken model never stops
the others from serving. So is a model whose directory, model.yaml or artifact resolves outside
the repository root (a symlink, an ``artifact: ../../x``): nothing outside the root is read, and
its name answers 422 (``InvalidInput``) rather than 404. Scanning reads only the YAML files, so
it is cheap enough to redo when a name is not found (a model added after start-up becomes
loadable without a restart); at most once a second, so clients naming unknown models cannot make
it read the disk at will.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from common.errors import InvalidInput, ModelNotFound
from common.model.config import ModelConfig

__all__ = ["ModelEntry", "ModelRepository", "RepositoryProblem"]

log = logging.getLogger(__name__)

RESCAN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class ModelEntry:
    config: ModelConfig
    directory: Path


@dataclass(frozen=True, slots=True)
class RepositoryProblem:
    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        where = f" (field '{self.field}')" if self.field else ""
        return f"{self.file}{where}: {self.message}"


@dataclass(slots=True)
class ModelRepository:
    root: Path
    _models: dict[str, dict[int, ModelEntry]] = field(default_factory=dict)
    problems: list[RepositoryProblem] = field(default_factory=list)
    _scanned_at: float = -RESCAN_INTERVAL_S
    _outside: set[str] = field(default_factory=set)
    """Names whose files resolve outside the root: refused."""

    def scan(self) -> None:
        """Re-read every model.yaml under ``root``."""
        models: dict[str, dict[int, ModelEntry]] = {}
        problems: list[RepositoryProblem] = []
        outside: set[str] = set()
        root = self.root.resolve()
        for path in sorted(self.root.glob("*/*/model.yaml")):
            entry = _inside_entry(path, root, problems, outside)
            if entry is not None:
                models.setdefault(entry.config.name, {})[entry.config.version] = entry
        for problem in problems:
            if problem not in self.problems:  # reported once, not on every rescan
                log.error("skipping model: %s", problem)
        self._models, self.problems, self._outside = models, problems, outside
        self._scanned_at = time.monotonic()

    def add(self, directory: Path) -> ModelEntry:
        """Read the version directory ``<root>/<name>/<version>`` that was just written, checked
        as a scan checks it; ``InvalidInput`` naming each problem (file, field) otherwise."""
        problems: list[RepositoryProblem] = []
        entry = _inside_entry(directory / "model.yaml", self.root.resolve(), problems, set())
        if entry is None:
            raise InvalidInput("; ".join(
                str(RepositoryProblem(p.file.relative_to(self.root), p.field, p.message))
                for p in problems))
        self._models.setdefault(entry.config.name, {})[entry.config.version] = entry
        return entry

    def holds(self, name: str, version: int) -> bool:
        """Whether the last scan found ``version`` of ``name`` (no rescan)."""
        return version in self._models.get(name, {})

    def _rescan(self) -> None:
        if time.monotonic() - self._scanned_at >= RESCAN_INTERVAL_S:
            self.scan()

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> dict[int, ModelEntry]:
        """Versions of a model, rescanning once if the name is unknown."""
        if name not in self._models:
            self._rescan()
        try:
            return self._models[name]
        except KeyError:
            if name in self._outside:
                raise InvalidInput(f"Model '{name}' is refused: its files lie outside the "
                                   f"model repository") from None
            raise ModelNotFound(f"Model '{name}' not found in the repository", name) from None

    def get(self, name: str, version: int | None = None) -> ModelEntry:
        """One version; ``None`` means the newest."""
        versions = self.versions(name)
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            self._rescan()
            versions = self.versions(name)
        try:
            return versions[version]
        except KeyError:
            have = ", ".join(str(v) for v in sorted(versions))
            raise ModelNotFound(
                f"Model '{name}' has no version {version} (versions: {have})", name
            ) from None


def _inside_entry(path: Path, root: Path, problems: list[RepositoryProblem],
                  outside: set[str]) -> ModelEntry | None:
    """``path``'s version, unless it or its artifact resolves outside ``root`` (its name then
    joins ``outside``) or it is malformed (``problems`` say why)."""
    if not path.resolve().is_relative_to(root):
        outside.add(path.parent.parent.name)
        problems.append(RepositoryProblem(
            path, "", "resolves outside the repository root (a symlink?): not read"))
        return None
    entry = _load_entry(path, problems)
    if entry is not None and entry.config.artifact is not None and not (
            entry.directory / entry.config.artifact).resolve().is_relative_to(root):
        outside.add(entry.config.name)
        problems.append(RepositoryProblem(
            path, "artifact", "resolves outside the repository root: not read"))
        return None
    return entry


def _load_entry(path: Path, problems: list[RepositoryProblem]) -> ModelEntry | None:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        problems.append(RepositoryProblem(path, "", f"cannot read YAML: {exc}"))
        return None
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(RepositoryProblem(path, loc, err["msg"]))
        return None
    name_dir, version_dir = path.parent.parent.name, path.parent.name
    if config.name != name_dir or str(config.version) != version_dir:
        problems.append(RepositoryProblem(
            path, "name" if config.name != name_dir else "version",
            f"model.yaml says {config.name}/{config.version} but lives in "
            f"{name_dir}/{version_dir}",
        ))
        return None
    return ModelEntry(config, path.parent)
