"""The data plane's transport: the ``Broker`` contract with its in-memory implementation
(embedded mode). The AMQP implementation, ``common.transport.amqp_broker`` with its consumer
side, is imported only where a broker URL is configured."""

from common.transport.broker import Broker, Delivery, DeliveryHandler, Subscription
from common.transport.memory import InMemoryBroker

__all__ = ["Broker", "Delivery", "DeliveryHandler", "InMemoryBroker", "Subscription"]
