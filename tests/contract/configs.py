"""Model versions of the contract tests: a ``ModelConfig`` around a test signature, which is
what a broker validates a producer's message against (``Broker.consume``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.model.config import ModelConfig
from common.model.signature import Checked, Signature

MAX_ROWS = 64


def config_for(model: str, signature: Signature, version: int = 1) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": model, "version": version, "format": "python", "entrypoint": "model:create",
        "signature": signature.model_dump(mode="json"),
        "batching": {"max_batch_size": MAX_ROWS}})


def checked(model: str, signature: Signature, inputs: dict[str, np.ndarray[Any, Any]],
            outputs: list[str] | None = None) -> Checked:
    """What the facade's validation makes of ``inputs`` (every request carries it)."""
    return signature.validate_request(inputs, outputs, max_rows=MAX_ROWS, model=model)
