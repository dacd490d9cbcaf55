"""The AMQP boundary's error conversion, shared by the RPC client (common/transport/amqp_client.py)
and the topology and consumer side (common/transport/amqp_broker.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aio_pika
import aiormq

from common.errors import BrokerUnavailable, InfernoError

__all__ = ["broker_errors"]


@contextlib.contextmanager
def broker_errors() -> Iterator[None]:
    """Turn the AMQP client's exceptions into ``BrokerUnavailable``."""
    try:
        yield
    except InfernoError:
        raise
    except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError,
            aiormq.exceptions.ChannelInvalidStateError, RuntimeError) as exc:
        raise BrokerUnavailable(f"Message broker unavailable: {type(exc).__name__}: {exc}"
                                ) from exc
