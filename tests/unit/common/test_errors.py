"""The error tree: codes, statuses, and rebuilding a worker's error on the facade side."""

from __future__ import annotations

import pytest

from common import errors
from common.errors import (
    BrokerUnavailable,
    InfernoError,
    ModelNotFound,
    ModelNotLoaded,
    StateUnavailable,
    Unavailable,
    error_from_code,
)


def every_class(cls: type[InfernoError] = InfernoError) -> list[type[InfernoError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(every_class(sub))
    return found


# The table of the module docstring: what clients rely on.
EXPECTED = {
    "InfernoError": (500, "internal"),
    "InvalidInput": (422, "invalid_input"),
    "InvalidJson": (400, "invalid_json"),
    "Unauthorized": (401, "unauthorized"),
    "Forbidden": (403, "forbidden"),
    "ModelNotFound": (404, "model_not_found"),
    "ModelNotLoaded": (404, "model_not_loaded"),
    "PayloadTooLarge": (413, "payload_too_large"),
    "UnsupportedEncoding": (415, "unsupported_encoding"),
    "Overloaded": (503, "overloaded"),
    "Unavailable": (503, "unavailable"),
    "BrokerUnavailable": (503, "broker_unavailable"),
    "StateUnavailable": (503, "state_unavailable"),
    "DeadlineExceeded": (504, "deadline_exceeded"),
    "AdminTimeout": (504, "admin_timeout"),
    "ModelFailed": (500, "model_failed"),
    "WorkerFailed": (500, "worker_failed"),
    "PoisonRequest": (500, "poison_request"),
}


def test_the_tree_is_the_documented_one() -> None:
    found = {c.__name__: (c.status_code, c.code) for c in every_class()
             if c.__module__ == errors.__name__}
    assert found == EXPECTED


def test_codes_are_unique() -> None:
    codes = [c.code for c in every_class() if c.__module__ == errors.__name__]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", [c for c in every_class() if c.__module__ == errors.__name__],
                         ids=lambda c: c.__name__)
def test_error_from_code_round_trips(cls: type[InfernoError]) -> None:
    original = cls("something went wrong")
    wire = original.to_dict()
    assert wire == {"code": cls.code, "message": "something went wrong"}

    rebuilt = error_from_code(wire["code"], wire["message"])

    assert type(rebuilt) is cls
    assert rebuilt.message == "something went wrong"
    assert str(rebuilt) == "something went wrong"
    assert rebuilt.status_code == cls.status_code


@pytest.mark.parametrize("code", ["no_such_code", "", "INVALID_INPUT"])
def test_an_unknown_code_is_a_plain_inferno_error(code: str) -> None:
    error = error_from_code(code, "from a newer worker")
    assert type(error) is InfernoError
    assert error.message == "from a newer worker"
    assert error.status_code == 500


def test_hierarchy() -> None:
    assert issubclass(ModelNotLoaded, ModelNotFound)
    assert issubclass(BrokerUnavailable, Unavailable)
    assert issubclass(StateUnavailable, Unavailable)
    assert all(issubclass(c, Exception) for c in every_class())


def test_every_error_is_exported() -> None:
    names = {c.__name__ for c in every_class() if c.__module__ == errors.__name__}
    assert names <= set(errors.__all__)
