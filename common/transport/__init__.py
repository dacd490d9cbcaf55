"""The data plane's transport: the ``Broker`` contract (``broker``: ``Broker``, ``Delivery``,
``Subscription``) and its in-memory implementation (``memory``, embedded mode). The AMQP
implementation is the ``amqp`` package, imported only where a broker URL is configured."""

from common.transport.broker import Broker, Delivery, DeliveryHandler, QueueStats, Subscription
from common.transport.memory import InMemoryBroker

__all__ = ["Broker", "Delivery", "DeliveryHandler", "InMemoryBroker", "QueueStats",
           "Subscription"]
