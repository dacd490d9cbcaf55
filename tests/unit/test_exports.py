"""The public API: every name in an ``__all__`` exists, and the packages keep their layering."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.imports import imports_of

PACKAGES = ["common", "facade", "worker", "inferno"]
MAIN = Path(__file__).resolve().parents[2]


def modules_of(package: str) -> list[str]:
    """The package and every module and subpackage below it."""
    root = importlib.import_module(package)
    # __main__ runs the command line when imported.
    return [package] + [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")
                        if not m.name.endswith(".__main__")]


def subpackages_of(package: str) -> list[str]:
    root = importlib.import_module(package)
    return [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.") if m.ispkg]


ALL_MODULES = [m for p in PACKAGES for m in modules_of(p)]
SUBPACKAGES = [s for p in PACKAGES for s in subpackages_of(p)]


@pytest.mark.parametrize("package", PACKAGES + SUBPACKAGES)
def test_each_package_declares_its_public_api(package: str) -> None:
    module = importlib.import_module(package)
    assert isinstance(module.__all__, list) and module.__all__
    assert len(module.__all__) == len(set(module.__all__)), "duplicate names in __all__"
    assert module.__doc__ and len(module.__doc__) > 40, f"{package} says what it holds"


def test_common_shows_the_architecture() -> None:
    assert set(subpackages_of("common")) >= {"common.model", "common.wire", "common.transport",
                                             "common.state"}


@pytest.mark.parametrize("name", ALL_MODULES)
def test_every_exported_name_exists(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing members: {missing}"


@pytest.mark.parametrize("package", PACKAGES + SUBPACKAGES)
def test_star_import(package: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    assert set(importlib.import_module(package).__all__) <= set(namespace)


def test_package_exports_are_the_real_classes() -> None:
    import common
    import facade
    import inferno
    import worker
    from common.transport.memory import InMemoryBroker
    from facade.app import Facade
    from inferno.embedded import Embedded
    from worker.batcher import Batcher

    assert common.InMemoryBroker is InMemoryBroker
    assert facade.Facade is Facade
    assert worker.Batcher is Batcher
    assert inferno.Embedded is Embedded


def imported_packages(package: str) -> set[str]:
    return set().union(*(imports_of(path) for path in (MAIN / package).rglob("*.py")))


@pytest.mark.parametrize(("package", "forbidden"), [
    ("common", {"facade", "worker", "inferno"}),
    ("facade", {"worker", "inferno"}),
    ("worker", {"facade", "inferno"}),
])
def test_layering(package: str, forbidden: set[str]) -> None:
    """facade and worker import only common; only the ``inferno`` launcher imports both."""
    assert not imported_packages(package) & forbidden


def test_amqp_libraries_are_imported_only_by_the_amqp_transport() -> None:
    amqp = MAIN / "common" / "transport" / "amqp"
    importers = [path.relative_to(MAIN) for package in PACKAGES
                 for path in (MAIN / package).rglob("*.py")
                 if imports_of(path) & {"aio_pika", "aiormq", "pamqp"}]
    assert importers, "the AMQP transport imports its libraries"
    assert all((MAIN / path).is_relative_to(amqp) for path in importers), importers
