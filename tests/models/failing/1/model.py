"""Row sums that refuse negative numbers by raising ValueError."""

from __future__ import annotations

from typing import Any

import torch


def create(context: Any) -> Any:
    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = inputs["x"]
        if bool((x < 0).any()):
            raise ValueError("negative input")
        return {"total": x.sum(dim=1)}

    return predict
