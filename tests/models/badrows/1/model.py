"""Row sums with one extra row appended: a model that breaks the batch contract."""

from __future__ import annotations

from typing import Any

import torch


def create(context: Any) -> Any:
    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total = inputs["x"].sum(dim=1)
        return {"total": torch.cat([total, total.new_zeros(1)])}

    return predict
