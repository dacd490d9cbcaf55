"""The tests do not import the benchmark: what both need lives in ``harness``, which imports
neither of them. Only the bench's own tests (tests/unit/bench/) import ``bench``."""

from __future__ import annotations

import importlib
from pathlib import Path

from tests.imports import imports_of

MAIN = Path(__file__).resolve().parents[2]
TESTS = MAIN / "tests"
BENCH_TESTS = TESTS / "unit" / "bench"
TOOLS = TESTS / "tools"


def importers(root: Path, package: str) -> list[str]:
    """The modules under ``root`` that import ``package``; tests/tools holds installed tools."""
    return sorted(str(path.relative_to(MAIN)) for path in root.rglob("*.py")
                  if not path.is_relative_to(TOOLS) and package in imports_of(path))


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
