"""The tests do not import the benchmark: what both need lives in ``harness``, which imports
neither of them. Only the bench's own tests (tests/unit/bench/) import ``bench``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

MAIN = Path(__file__).resolve().parents[2]
TESTS = MAIN / "tests"
BENCH_TESTS = TESTS / "unit" / "bench"


def imported_packages(path: Path) -> set[str]:
    """The top-level packages one module imports (absolute imports, at any depth)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def importers(root: Path, package: str) -> list[str]:
    return sorted(str(path.relative_to(MAIN)) for path in root.rglob("*.py")
                  if package in imported_packages(path))


def test_no_test_outside_the_bench_tests_imports_bench() -> None:
    offenders = [path for path in importers(TESTS, "bench")
                 if not (MAIN / path).is_relative_to(BENCH_TESTS)]
    assert not offenders, f"import what they need from harness instead: {offenders}"


def test_the_check_sees_an_import_of_bench() -> None:
    # The bench's own tests do import it: were none found, the check above would prove nothing.
    assert importers(BENCH_TESTS, "bench")


def test_harness_imports_neither_bench_nor_the_tests() -> None:
    assert not importers(MAIN / "harness", "bench") + importers(MAIN / "harness", "tests")


def test_harness_declares_its_public_api() -> None:
    harness = importlib.import_module("harness")
    assert harness.__doc__ and harness.__all__
    missing = [name for name in harness.__all__ if not hasattr(harness, name)]
    assert not missing, missing
