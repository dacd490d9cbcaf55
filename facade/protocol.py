"""What a protocol is to the facade, and the checks every protocol shares.

- ``ProtocolCall``: one request of a protocol, as ``DataPlane.infer`` drives it (parse, decode,
  encode; facade/data_plane.py lists the steps). Every transport makes these: the ASGI front for
  v1 and v2, next a gRPC servicer.
- ``HttpProtocol``: how the ASGI front turns an HTTP request into a call and writes its answer or
  its error. A protocol over HTTP is one such object and a row in ``facade.front.PREDICT_ROUTES``.
- ``BodyRoutedProtocol``: an HTTP protocol whose body names the model and whose request may take
  several calls (OpenAI's embeddings, ``facade.openai_protocol``): it drives the data plane
  itself, one ``infer`` per call; the front serves it at a fixed path.
- ``version_of`` / ``parse_version``: the one reader of a model version, wherever one is given
  (a predict path, a v1 body, a FastAPI path or body through ``facade.routing.Version``).
- ``positive``: an envelope's number that must be positive (a timeout).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy.typing as npt

from common.errors import InfernoError, InvalidInput
from common.model.config import ModelConfig

if TYPE_CHECKING:
    from facade.data_plane import DataPlane

__all__ = ["Answer", "Answering", "BodyRoutedProtocol", "Headers", "HttpProtocol",
           "ProtocolCall", "parse_version", "positive", "version_of"]

Array = npt.NDArray[Any]
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
Headers = Sequence[tuple[bytes, bytes]]
"""HTTP headers as ASGI holds them: lower-case names, raw values."""
Answer = tuple[int, bytes, Headers]
"""An HTTP answer: its status, body and headers (content type first; the front adds the request
id and the length)."""

_INTEGER = re.compile(r"-?[0-9]+")  # ASCII: str.isdigit takes "²", and int() other scripts' digits
_NOT_AN_INTEGER = "Input should be a valid integer"
_BELOW_ONE = "Input should be greater than or equal to 1"


class ProtocolCall(Protocol[T_co]):
    """One request of one protocol, as the data plane drives it."""

    route: str
    """The protocol's label in the metrics (``v1``, ``v2``)."""

    def parse(self) -> tuple[int | None, float | None]:
        """Read the envelope: the version asked for (``None``: the active one) and the timeout
        asked for, in milliseconds, checked positive (``None``: the model's)."""

    def decode(self, config: ModelConfig) -> tuple[dict[str, Array], list[str] | None]:
        """The input arrays and the output names asked for (``None``: every output)."""

    def encode(self, config: ModelConfig, outputs: dict[str, Array]) -> T_co:
        """The protocol's response to a successful predict."""


class Answering(Protocol[T_contra]):
    """What the ASGI front needs of any protocol it serves: its answers, and its errors'."""

    name: str
    """Its label: the OpenAPI tag of its routes, its calls' ``route``."""

    def answer(self, result: T_contra) -> Answer:
        """The HTTP answer of a request that succeeded."""

    def refuse(self, error: InfernoError) -> Answer:
        """The HTTP answer of an error, at any step of a predict (``facade.errors``)."""


class HttpProtocol(Answering[T], Protocol[T]):
    """A protocol the ASGI front serves: what its calls answer (``T``) is its own business."""

    def call(self, body: bytes, headers: Headers) -> ProtocolCall[T]:
        """The call a request makes, from its body and its headers."""


class BodyRoutedProtocol(Answering[T], Protocol[T]):
    """A protocol whose request names its model in the body, answered through the data plane's
    ``infer`` as many times as it takes."""

    async def respond(self, plane: DataPlane, body: bytes, headers: Headers,
                      request_id: str) -> T:
        """The result of one request (its body, headers and id)."""


def parse_version(value: object) -> int:
    """A model version: an integer, or a string of ASCII digits, at least 1. Anything else
    (``0``, ``-3``, ``"0"``, ``"two"``, ``"1.5"``, ``"²"``, ``true``) is a ``ValueError`` saying
    why, in pydantic's words (what the FastAPI routes have always answered)."""
    if isinstance(value, str):
        value = _integer(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(_NOT_AN_INTEGER)
    if value < 1:
        raise ValueError(_BELOW_ONE)
    return value


def _integer(text: str) -> int:
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # past int()'s limit of 4300 digits
            pass
    raise ValueError(f"{_NOT_AN_INTEGER}, unable to parse string as an integer")


def version_of(value: object, where: str) -> int:
    """``parse_version``, refusing with an ``InvalidInput`` that names ``where``
    (``path.version``, ``version``)."""
    try:
        return parse_version(value)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}", version=value) from None


def positive(value: Any, what: str, unit: str = "") -> float | None:
    """An envelope's number (a timeout): absent, or positive; for ``ProtocolCall.parse``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"{what} must be a positive number{unit}")
    return float(value)
