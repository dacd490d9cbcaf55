"""Echoes its bfloat16 and float16 inputs, and their float32 widenings."""

from __future__ import annotations

from typing import Any

import torch


def create(context: Any) -> Any:
    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        bf16, fp16 = inputs["bf16"], inputs["fp16"]
        if bf16.dtype != torch.bfloat16 or fp16.dtype != torch.float16:
            raise TypeError(f"got {bf16.dtype} and {fp16.dtype}")
        return {"bf16": bf16, "fp16": fp16,
                "bf16_f32": bf16.to(torch.float32), "fp16_f32": fp16.to(torch.float32)}

    return predict
