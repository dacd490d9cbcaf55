"""The ``embeddings`` section of model.yaml: which tensors serve the OpenAI embeddings API.

Any text-in, vector-out model qualifies (``facade.openai_protocol`` serves it)::

    embeddings:
      input: text        # a string input of shape [batch]: one text per row
      output: embedding  # a float32 output of shape [batch, D], D fixed: the vector
      tokens: tokens     # optional: an int64/int32 output [batch], each text's token count
                         # before truncation (the API's usage)
      max_tokens: 256    # optional, needs tokens: the model's maximum sequence length
      token_ids: ids     # optional, needs max_tokens: an int64 input [batch, max_tokens] taking
                         # token ids instead of text (then both inputs are optional)
      pad_token_id: 0    # what the facade pads id rows with (default 0)

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
    token_ids: str | None = None
    """An int64 input ``[batch, max_tokens]`` taking a request's token ids (the tokenizer's,
    without special tokens: the model adds its own), each row padded with ``pad_token_id``;
    without it, token ids are refused."""
    pad_token_id: Annotated[int, Field(ge=0)] = 0
    """What the facade pads token id rows with, up to ``max_tokens``."""

    def check(self, signature: Signature) -> None:
        """``ValueError`` naming the field whose tensor the signature lacks or shapes otherwise."""
        text = _spec(signature.inputs, self.input, "input")
        if text.dtype is not DType.STRING or text.shape != [BATCH]:
            raise ValueError(f"embeddings.input: '{self.input}' must be a string input of "
                             f"shape [batch], not {text.dtype.value} {text.shape}")
        given = (self.input, self.token_ids)
        others = [s.name for s in signature.inputs if s.name not in given and not s.optional]
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
        if self.token_ids is not None:
            self._check_ids(signature, text, self.token_ids)

    def _check_ids(self, signature: Signature, text: TensorSpec, name: str) -> None:
        if self.max_tokens is None:
            raise ValueError("embeddings.token_ids needs embeddings.max_tokens: the width N of "
                             "its rows")
        ids = _spec(signature.inputs, name, "token_ids")
        if ids.dtype is not DType.INT64 or ids.shape != [BATCH, self.max_tokens]:
            raise ValueError(f"embeddings.token_ids: '{ids.name}' must be an int64 input of "
                             f"shape [batch, {self.max_tokens}] (max_tokens), not "
                             f"{ids.dtype.value} {ids.shape}")
        # A request gives the text or the ids, never both: each is left out of the other's.
        for field, spec in (("input", text), ("token_ids", ids)):
            if not spec.optional:
                raise ValueError(f"embeddings.{field}: '{spec.name}' must be optional: true, "
                                 f"as embeddings.token_ids is declared (a request gives the "
                                 f"text or its ids)")

    @property
    def ids(self) -> tuple[str, int] | None:
        """The token id input and its width (``max_tokens``), when the model takes ids."""
        if self.token_ids is None or self.max_tokens is None:  # check() holds them together
            return None
        return self.token_ids, self.max_tokens

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
    kind = "input" if field in ("input", "token_ids") else "output"
    raise ValueError(f"embeddings.{field}: the signature has no {kind} '{name}' "
                     f"({kind}s: {', '.join(s.name for s in specs)})")
