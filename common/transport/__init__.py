"""The data plane's transport: the ``Broker`` contract with its in-memory implementation
(embedded mode). The AMQP implementation is imported only where a broker URL is configured:
``amqp_broker`` (``AmqpBroker``: connection, topology) composes ``amqp_client`` (the facade's
requests and replies) and ``amqp_consumer`` (the worker's deliveries, written through
``outbox``; redelivered ones move to retry queues, ``amqp_retry``, and the callers of poison
requests are answered from the dead letters, ``amqp_dead_letter``); ``aiormq_frames`` holds
the aiormq internals the outbox relies on, and ``amqp_errors`` the conversion of AMQP errors
into ``BrokerUnavailable``."""

from common.transport.broker import Broker, Delivery, DeliveryHandler, QueueStats, Subscription
from common.transport.memory import InMemoryBroker

__all__ = ["Broker", "Delivery", "DeliveryHandler", "InMemoryBroker", "QueueStats",
           "Subscription"]
