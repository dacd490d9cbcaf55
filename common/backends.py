"""Pick the broker and state store implementations from the settings."""

from __future__ import annotations

from common.settings import CommonSettings
from common.state.memory import InMemoryStateStore
from common.state.store import StateStore
from common.tls import broker_ssl_context, redis_ssl_options
from common.transport.broker import Broker
from common.transport.memory import InMemoryBroker

__all__ = ["create_broker", "create_state_store"]


def create_broker(settings: CommonSettings) -> Broker:
    """AMQP when ``INFERNO_BROKER_URL`` is set, else the in-process broker."""
    if settings.broker_url is None:
        return InMemoryBroker()
    from common.transport.amqp.broker import AmqpBroker
    from common.transport.blobs import Blobs

    blobs = (Blobs(settings.redis_url, settings.redis_prefix, settings.claim_check_bytes,
                   tls=redis_ssl_options(settings))
             if settings.redis_url is not None else None)  # 0: claims read, never made
    return AmqpBroker(settings.broker_url, queue_type=settings.queue_type,
                      delivery_limit=settings.queue_delivery_limit,
                      persistent=settings.persistent_requests,
                      max_envelope_bytes=settings.envelope_max_bytes,
                      max_elements=settings.max_elements_per_tensor,
                      ssl_context=broker_ssl_context(settings), blobs=blobs)


def create_state_store(settings: CommonSettings) -> StateStore:
    """Redis when ``INFERNO_REDIS_URL`` is set, else the in-process store."""
    if settings.redis_url is None:
        return InMemoryStateStore()
    from common.state.redis_store import RedisStateStore

    return RedisStateStore(settings.redis_url, settings.redis_prefix,
                           tls=redis_ssl_options(settings))
