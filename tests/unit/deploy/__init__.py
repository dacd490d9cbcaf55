"""Rendering deploy/k8s for the deployment tests: `kubectl kustomize` on each overlay.

The tests check what a cluster would receive (`kubectl apply -k deploy/k8s/overlays/<x>`), never
the files one by one, and never through a renderer of our own: kubectl's kustomize resolves the
bases, components and patches.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.tools import NODE_MODULES, require_node_module, require_tool

__all__ = ["K8S", "OVERLAYS", "VALIDATE_KEDA", "Manifests", "index", "render", "validate_keda"]

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
"""Every overlay: each is one complete way to deploy Inferno."""
VALIDATE_KEDA = Path(__file__).resolve().parent / "validate_keda.mjs"

Manifests = dict[tuple[str, str], dict[str, Any]]


@functools.cache
def _render_text(overlay: str) -> str:
    kubectl = require_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize deploy/k8s/overlays/<overlay>` renders (fresh copies)."""
    return [doc for doc in yaml.safe_load_all(_render_text(overlay)) if doc]


def index(docs: list[dict[str, Any]]) -> Manifests:
    """The objects by (kind, name); a duplicate is an error."""
    out: Manifests = {}
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in out, f"{key} rendered twice"
        out[key] = doc
    return out


def validate_keda(objects: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Runs validate_keda.mjs (KEDA's published schemas) on ``objects``."""
    node = require_tool("node")
    require_node_module("@kubernetes-models/keda")
    return subprocess.run([node, str(VALIDATE_KEDA), str(NODE_MODULES)],
                          input=json.dumps(objects), capture_output=True, text=True,
                          timeout=120, check=False)
