"""The ``embeddings`` section of model.yaml: which tensors serve the OpenAI embeddings API.

Any text-in, vector-out model qualifies (``facade.openai_protocol`` serves it)::

    embeddings:
      input: text        # a string input of shape [batch]: one text per row
      output: embedding  # a float32 output of shape [batch, D], D fixed: the vector
      tokens: tokens     # optional: an int64/int32 output [batch], each text's token count
                         # before truncation (the API's usage)
      max_tokens: 256    # optional, needs tokens: the model's maximum sequence length

``EmbeddingsConfig.check`` holds the section to the signature when model.yaml is read, so a
mismatch is an error of that file, as any other field's.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from common.model.dtypes import DType
from common.model.signature import BATCH, Signature, TensorSpec

__all__ = ["EmbeddingsConfig"]

_COUNTS = (DType.INT64, DType.INT32)


class EmbeddingsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str
    """The string input taking one text per row (shape ``[batch]``)."""
    output: str
    """The float32 output ``[batch, D]``: each text's vector."""
    tokens: str | None = None
    """An int output ``[batch]``: each text's token count before truncation, special tokens
    included; without it the API's usage counts 0."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """The model's maximum sequence length: longer texts are truncated by the model (or
    refused, when the request or ``INFERNO_OPENAI_TRUNCATE`` asks)."""

    def check(self, signature: Signature) -> None:
        """``ValueError`` naming the field whose tensor the signature lacks or shapes otherwise."""
        text = _spec(signature.inputs, self.input, "input")
        if text.dtype is not DType.STRING or text.shape != [BATCH]:
            raise ValueError(f"embeddings.input: '{self.input}' must be a string input of "
                             f"shape [batch], not {text.dtype.value} {text.shape}")
        others = [s.name for s in signature.inputs if s.name != self.input and not s.optional]
        if others:
            raise ValueError(f"embeddings: the API gives only the text, but the model also "
                             f"requires {', '.join(others)} (make them optional)")
        self.dimensions(signature)
        if self.tokens is not None:
            counts = _spec(signature.outputs, self.tokens, "tokens")
            if counts.dtype not in _COUNTS or counts.shape != [BATCH]:
                raise ValueError(f"embeddings.tokens: '{self.tokens}' must be an int64 or "
                                 f"int32 output of shape [batch], not {counts.dtype.value} "
                                 f"{counts.shape}")
        elif self.max_tokens is not None:
            raise ValueError("embeddings.max_tokens needs embeddings.tokens: the counts it is "
                             "compared with")

    def dimensions(self, signature: Signature) -> int:
        """D: the width of each vector; ``ValueError`` unless the output is float32 ``[batch, D]``
        with D fixed."""
        vector = _spec(signature.outputs, self.output, "output")
        shape, width = vector.shape, vector.shape[-1]
        if vector.dtype is not DType.FLOAT32 or len(shape) != 2 or not isinstance(width, int):
            raise ValueError(f"embeddings.output: '{self.output}' must be a float32 output of "
                             f"shape [batch, D] with D fixed, not {vector.dtype.value} {shape}")
        return width


def _spec(specs: list[TensorSpec], name: str, field: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    kind = "input" if field == "input" else "output"
    raise ValueError(f"embeddings.{field}: the signature has no {kind} '{name}' "
                     f"({kind}s: {', '.join(s.name for s in specs)})")
