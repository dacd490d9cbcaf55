"""The test embedding models beside this file (one directory of versions each), copied into a
test's repository, and what ``numbers`` answers, worked out apart from its model.py."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["NUMBERS_WIDTH", "ROWS", "numbers_vector", "with_models"]

HERE = Path(__file__).resolve().parent
NUMBERS_WIDTH = 8
"""numbers' ``max_tokens``: the ids it reads of a row, the width of its ``ids`` input."""


def with_models(repo: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(HERE / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def numbers_vector(ids: list[int]) -> list[int]:
    """numbers' vector of a text's ids: [count, sum, position-weighted sum, largest] of those
    it reads."""
    read = ids[:NUMBERS_WIDTH]
    return [len(read), sum(read), sum(p * i for p, i in enumerate(read, 1)), max(read)]


ROWS = [[5, 17, 3], [2] * 8, [40], [7, 7, 9, 2, 3], [300, 0, 12], [11, 13]]
"""Six texts' token ids for numbers (none its padding, 1): more than its max_batch_size of 4."""
