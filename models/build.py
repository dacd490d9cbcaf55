"""Build the sample TorchScript artifacts: ``python models/build.py`` (deterministic, seeded;
``python models/build.py minilm``: minilm's ONNX files only).

``mlp`` is the benchmark MLP of DESIGN.md (256 → 1024 → 1024 → 10). Version 1 returns
``(probs, label)``; version 2 has other weights and also returns ``logits``.

``vision`` is a tiny image classifier over 3x224x224 float32 images (600 KB of input per image):
the model that shows what the transport costs when tensors are large (v1 JSON vs v2 binary).

``minilm`` versions 2 and 3 run ONNX exports of the packaged all-MiniLM-L6-v2 weights, which live
in a cache outside the repository (``models/minilm/embedders.py``): built here ahead of time
when the minilm extra is installed, instead of by the versions' first load.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class MLP(nn.Module):
    def __init__(self, with_logits: bool) -> None:
        super().__init__()
        self.with_logits = with_logits
        self.layers = nn.Sequential(
            nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
            nn.Linear(1024, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.layers(x)
        probs = torch.softmax(logits, dim=-1)
        label = torch.argmax(logits, dim=-1)
        if self.with_logits:
            return probs, label, logits
        return probs, label


class Vision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=7, stride=4, padding=3), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(image).flatten(1)), dim=-1)


def build() -> None:
    for version in (1, 2):
        torch.manual_seed(version)
        # Traced, so the version switch is fixed at build time and no annotations are needed.
        module = torch.jit.trace(MLP(with_logits=version == 2).eval(), torch.zeros(2, 256))
        path = HERE / "mlp" / str(version) / "model.pt"
        module.save(str(path))
        print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size // 1024} KiB)")
    torch.manual_seed(3)
    vision = torch.jit.trace(Vision().eval(), torch.zeros(2, 3, 224, 224))
    path = HERE / "vision" / "1" / "model.pt"
    vision.save(str(path))
    print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size // 1024} KiB)")
    build_minilm()


def build_minilm() -> None:
    name, source = "inferno_models.minilm.embedders", HERE / "minilm" / "embedders.py"
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {source}")
    embedders = importlib.util.module_from_spec(spec)
    sys.modules[name] = embedders  # its dataclasses look their module up there
    spec.loader.exec_module(embedders)
    for precision in embedders.PRECISIONS:
        try:
            path = embedders.ensure(precision)
        except embedders.MissingExtra as exc:
            print(f"skipped minilm's ONNX files: {exc}")
            return
        print(f"minilm {precision.name}: {path} ({path.stat().st_size // 2**20} MiB)")


if __name__ == "__main__":
    # `python models/build.py minilm`: only the ONNX files (what the images build: the
    # TorchScript artifacts are in the repository).
    if sys.argv[1:] == ["minilm"]:
        build_minilm()
    else:
        build()
