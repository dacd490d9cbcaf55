"""The ``Broker`` over RabbitMQ (docs/queue-protocol.md); the only code that imports aio-pika,
aiormq and pamqp.

``broker`` (``AmqpBroker``: connection, topology) composes the facade's side, ``client``
(confirmed publishes coalesced by ``coalescing``, the reply queue, cancel notices from
``cancel``), and the worker's, ``consumer`` (a queue's deliveries read by ``delivered``, an
envelope's members settled by ``settlement``, replies and acks written through ``outbox`` with
the aiormq internals of ``aiormq_frames``, the prefetch kept in rows by ``prefetch``).
Redelivered messages move to retry queues (``retry``); the callers of poison requests are
answered from the dead letters (``dead_letter``); ``errors`` turns AMQP errors into
``BrokerUnavailable``."""

from common.transport.amqp.broker import AmqpBroker

__all__ = ["AmqpBroker"]
