"""Model signatures and the one validation a request passes (``Signature.validate_request``).

Every tensor's leading dimension is the symbolic ``batch``: requests are concatenated along it and
outputs are split back along it. Other dimensions are fixed integers or symbolic names; a symbolic
name must take the same value in every input of one request (every ``seq`` equal).

The facade validates what HTTP clients send and the worker validates what producers put on the
queue themselves, both with ``validate_request``: its result, ``Checked``, is what a
``PredictRequest`` carries, so nothing downstream re-checks or wonders whether it was checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.errors import InvalidInput
from common.model.dtypes import DType
from common.model.strings import DEFAULT_MAX_STRING_BYTES, check_strings

__all__ = ["BATCH", "Checked", "Dim", "Signature", "TensorSpec"]

BATCH = "batch"
Dim = int | str
Array = npt.NDArray[np.generic]


def _fmt_shape(shape: Iterable[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True, slots=True)
class Checked:
    """What validation established about one request's inputs."""

    rows: int
    """Rows along the batch dimension (at least 1, at most the model's ``max_batch_size``)."""
    dims: tuple[tuple[str, tuple[int, ...]], ...]
    """Each input's non-batch shape, by name: only requests with equal ``dims`` share a batch."""
    outputs: list[str] | None
    """The outputs to return, without repeats; ``None`` for every output."""


class TensorSpec(BaseModel):
    """One named input or output tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")]
    dtype: DType
    shape: list[Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]]
    optional: bool = False
    """An optional input may be left out of a request; outputs are never optional."""
    max_string_bytes: Annotated[int, Field(ge=1)] | None = None
    """A string input's bound on one element's UTF-8 bytes (default
    ``DEFAULT_MAX_STRING_BYTES``); only string inputs take it."""

    @model_validator(mode="after")
    def _string_bound(self) -> TensorSpec:
        if self.max_string_bytes is not None and self.dtype is not DType.STRING:
            raise ValueError(f"'{self.name}': max_string_bytes is for string tensors only")
        return self

    @property
    def string_limit(self) -> int:
        return self.max_string_bytes or DEFAULT_MAX_STRING_BYTES

    @field_validator("shape")
    @classmethod
    def _leading_batch(cls, shape: list[Dim]) -> list[Dim]:
        if not shape or shape[0] != BATCH:
            raise ValueError(f"the first dimension must be '{BATCH}', got {_fmt_shape(shape)}")
        return shape

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "dtype": self.dtype.value,
                                  "shape": self.shape, "optional": self.optional}
        if self.max_string_bytes is not None:
            out["max_string_bytes"] = self.max_string_bytes
        return out


class Signature(BaseModel):
    """The inputs a model takes and the outputs it returns, in positional order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [s.name for s in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} name(s): {', '.join(dupes)}")
        if any(s.optional for s in self.outputs):
            raise ValueError("outputs cannot be optional")
        if any(s.max_string_bytes is not None for s in self.outputs):
            raise ValueError("max_string_bytes is for inputs only")
        return self

    # Cached: these are read on every request, and the model is frozen.
    @cached_property
    def input_specs(self) -> dict[str, TensorSpec]:
        return {s.name: s for s in self.inputs}

    @cached_property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    @cached_property
    def input_dtypes(self) -> dict[str, DType]:
        return {s.name: s.dtype for s in self.inputs}

    @cached_property
    def output_dtypes(self) -> dict[str, DType]:
        return {s.name: s.dtype for s in self.outputs}

    def validate_request(self, inputs: Mapping[str, Array], outputs: Iterable[str] | None, *,
                         max_rows: int, model: str) -> Checked:
        """Check a decoded request (input names, dtypes, shapes, rows, the output selection)."""
        self.check_input_names(inputs)
        selected = self.check_outputs(outputs)
        rows = self.check_inputs(inputs)
        if rows > max_rows:
            raise InvalidInput(f"Batch of {rows} rows exceeds max_batch_size {max_rows} "
                               f"of model '{model}'")
        return Checked(rows, tuple((n, a.shape[1:]) for n, a in sorted(inputs.items())),
                       selected)

    def check_input_names(self, names: Iterable[str]) -> None:
        """422 for missing required or unexpected inputs, before any data is decoded."""
        given = set(names)
        expected = ", ".join(sorted(s.name for s in self.inputs))
        missing = sorted(s.name for s in self.inputs if not s.optional and s.name not in given)
        if missing:
            raise InvalidInput(
                f"Missing required input(s): {', '.join(missing)}. Expected inputs: {expected}"
            )
        unexpected = sorted(given - {s.name for s in self.inputs})
        if unexpected:
            raise InvalidInput(
                f"Unexpected input(s): {', '.join(unexpected)}. Expected inputs: {expected}"
            )

    def check_outputs(self, requested: Iterable[str] | None) -> list[str] | None:
        """Validate a requested output selection; ``None`` or none at all means every output."""
        if requested is None:
            return None
        wanted = list(dict.fromkeys(requested))
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise InvalidInput(
                f"Unknown output(s): {', '.join(unknown)}. "
                f"Available outputs: {', '.join(sorted(self.output_names))}"
            )
        return wanted or None

    def check_inputs(self, arrays: Mapping[str, Array]) -> int:
        """Check dtypes and shapes of decoded inputs; return the batch size (rows)."""
        specs = self.input_specs
        bound: dict[str, tuple[int, str]] = {}
        for name, array in arrays.items():
            spec = specs[name]
            if array.dtype != spec.dtype.numpy:
                raise InvalidInput(
                    f"Input '{name}': expected dtype {spec.dtype.value}, got {array.dtype}"
                )
            if array.ndim != len(spec.shape):
                raise InvalidInput(
                    f"Input '{name}': expected shape {_fmt_shape(spec.shape)} "
                    f"({len(spec.shape)} dims), got {list(array.shape)}"
                )
            for dim, size in zip(spec.shape, array.shape, strict=True):
                if isinstance(dim, int):
                    if size != dim:
                        raise InvalidInput(
                            f"Input '{name}': expected shape {_fmt_shape(spec.shape)}, "
                            f"got {list(array.shape)}"
                        )
                elif dim in bound and bound[dim][0] != size:
                    value, other = bound[dim]
                    raise InvalidInput(
                        f"Input '{name}': dimension '{dim}' is {size} here but {value} "
                        f"in input '{other}'"
                    )
                else:
                    bound.setdefault(dim, (size, name))
            if spec.dtype is DType.STRING:
                check_strings(name, array, spec.string_limit)
        if BATCH not in bound:
            raise InvalidInput("The request has no inputs: give at least one")
        rows = bound[BATCH][0]
        if rows < 1:
            raise InvalidInput("The batch dimension must be at least 1")
        return rows
