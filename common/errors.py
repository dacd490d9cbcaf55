"""The one error tree of Inferno.

Every failure a client can see is an ``InfernoError`` with an HTTP ``status_code`` and a stable
``code``. Worker errors cross the queue hop as ``{code, message}`` and are raised again on the
facade as the same class (``error_from_code``), so the facade maps all of them in one handler.

    InfernoError (500, internal)
    ├── InvalidInput (422, invalid_input)          names the offending field
    │   └── InvalidJson (400, invalid_json)        the body is not JSON at all
    ├── Unauthorized (401, unauthorized)           no or a wrong bearer token
    ├── Forbidden (403, forbidden)                 admin calls on a public address, no token set
    ├── ModelNotFound (404, model_not_found)       unknown model or version
    │   └── ModelNotLoaded (404, model_not_loaded) known, but no runner has it loaded
    ├── PayloadTooLarge (413, payload_too_large)
    ├── UnsupportedEncoding (415, unsupported_encoding)  a Content-Encoding not read here
    ├── Overloaded (503, overloaded)               the model's queue is full
    ├── Unavailable (503, unavailable)             no worker, broker or state store down
    │   ├── BrokerUnavailable (503, broker_unavailable)
    │   └── StateUnavailable (503, state_unavailable)
    ├── DeadlineExceeded (504, deadline_exceeded)
    ├── AdminTimeout (504, admin_timeout)          workers did not report a change in time
    ├── ModelFailed (500, model_failed)            the model raised: names the exception class
    └── WorkerFailed (500, worker_failed)          the serving machinery itself broke
        └── PoisonRequest (500, poison_request)    the request's worker died on every delivery
"""

from __future__ import annotations

__all__ = [
    "AdminTimeout",
    "BrokerUnavailable",
    "DeadlineExceeded",
    "Forbidden",
    "InfernoError",
    "InvalidInput",
    "InvalidJson",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotLoaded",
    "Overloaded",
    "PayloadTooLarge",
    "PoisonRequest",
    "StateUnavailable",
    "Unauthorized",
    "Unavailable",
    "UnsupportedEncoding",
    "WorkerFailed",
    "error_from_code",
]


class InfernoError(Exception):
    """Base of every error a client can see."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidInput(InfernoError):
    status_code = 422
    code = "invalid_input"

    def __init__(self, message: str, version: object = None) -> None:
        super().__init__(message)
        self.version = version
        """What was sent as a model version, when that is what is wrong (``"0"``, ``"two"``)."""


class InvalidJson(InvalidInput):
    """The body could not be read at all (JSON syntax, NaN, nesting past the parser's limit, a
    gzip or deflate stream that does not decode): 400 on v1 and v2 alike; a body that parses
    but is wrong stays a 422 on v1."""

    status_code = 400
    code = "invalid_json"


class Unauthorized(InfernoError):
    """A guarded route without the right ``Authorization: Bearer`` token (answered with a
    ``WWW-Authenticate: Bearer`` header)."""

    status_code = 401
    code = "unauthorized"


class Forbidden(InfernoError):
    status_code = 403
    code = "forbidden"


class ModelNotFound(InfernoError):
    status_code = 404
    code = "model_not_found"

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        """The model asked for, where the raiser knows it (Triton's clients match its name)."""


class ModelNotLoaded(ModelNotFound):
    code = "model_not_loaded"


class PayloadTooLarge(InfernoError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedEncoding(InfernoError):
    """A request body in a ``Content-Encoding`` this server does not read."""

    status_code = 415
    code = "unsupported_encoding"


class Overloaded(InfernoError):
    status_code = 503
    code = "overloaded"


class Unavailable(InfernoError):
    status_code = 503
    code = "unavailable"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


class StateUnavailable(Unavailable):
    code = "state_unavailable"


class DeadlineExceeded(InfernoError):
    status_code = 504
    code = "deadline_exceeded"


class AdminTimeout(InfernoError):
    status_code = 504
    code = "admin_timeout"


class ModelFailed(InfernoError):
    code = "model_failed"

    def __init__(self, message: str, loading: str | None = None) -> None:
        super().__init__(message)
        self.loading = loading
        """The model whose load failed; ``None`` when a predict failed."""


class WorkerFailed(InfernoError):
    code = "worker_failed"


class PoisonRequest(WorkerFailed):
    """The request was given up: the worker holding it died (crash, ``os._exit``, OOM kill)
    on every delivery the queue allowed. Retrying it is likely to kill another worker."""

    code = "poison_request"


def _subclasses(cls: type[InfernoError]) -> list[type[InfernoError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


_BY_CODE: dict[str, type[InfernoError]] = {c.code: c for c in _subclasses(InfernoError)}


def error_from_code(code: str, message: str) -> InfernoError:
    """Rebuild the error a worker reported; an unknown code stays a plain ``InfernoError``."""
    return _BY_CODE.get(code, InfernoError)(message)
