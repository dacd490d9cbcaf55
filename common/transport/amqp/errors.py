"""The AMQP boundary's error conversion, shared by the RPC client (client.py)
and the topology and consumer side (broker.py).

Only what says the broker is out of reach becomes ``BrokerUnavailable`` (503): aio-pika's and
aiormq's AMQP errors, connection errors (``OSError``), ``ChannelInvalidStateError`` (a closed
channel), and the plain ``RuntimeError``s aio-pika and aiormq raise themselves about a connection
that is not open (``Connection was not opened``, ``... closed``), told apart by where they were
raised. Any other ``RuntimeError`` is a bug: it goes through unchanged, to be logged with its
traceback and answered 500 ``internal``, not hidden as an outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

import aio_pika
import aiormq

from common.errors import BrokerUnavailable, InfernoError

__all__ = ["broker_errors", "is_broker_error"]

_LIBRARIES = ("aio_pika", "aiormq", "pamqp")


def is_broker_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker is unavailable (rather than a bug)."""
    if isinstance(exc, (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError,
                        OSError, aiormq.exceptions.ChannelInvalidStateError,
                        aio_pika.exceptions.ChannelInvalidStateError)):
        return True
    return type(exc) is RuntimeError and _raised_in_library(exc.__traceback__)


def _raised_in_library(tb: TracebackType | None) -> bool:
    module = ""
    while tb is not None:  # the innermost frame: where it was raised
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return module.split(".", 1)[0] in _LIBRARIES


@contextlib.contextmanager
def broker_errors() -> Iterator[None]:
    """Turn the AMQP client's exceptions that mean "broker unavailable" into
    ``BrokerUnavailable``; let every other exception through."""
    try:
        yield
    except InfernoError:
        raise
    except Exception as exc:
        if not is_broker_error(exc):
            raise
        raise BrokerUnavailable(f"Message broker unavailable: {type(exc).__name__}: {exc}"
                                ) from exc
