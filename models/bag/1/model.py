"""Masked bag-of-tokens statistics: the shape of a Python-entrypoint model.

``create(context)`` is called once when the version loads (``context.device``, ``context.config``
and ``context.directory`` are available); it returns the callable that runs each batch.
"""

from __future__ import annotations

from typing import Any

import torch


def create(context: Any) -> Any:
    device = context.device

    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = inputs["tokens"].to(device)
        mask = inputs["mask"].to(device)
        kept = torch.where(mask, tokens, torch.zeros_like(tokens))
        total = kept.sum(dim=1)
        count = mask.sum(dim=1)
        mean = total.to(torch.float32) / count.clamp(min=1).to(torch.float32)
        return {"sum": total, "count": count, "mean": mean}

    return predict
