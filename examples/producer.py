"""An asynchronous producer: predict requests published straight to Inferno's queues, no HTTP.

    python examples/producer.py --url amqp://guest:guest@127.0.0.1:5672/ --count 8

It publishes to the model's alias routing key (``bag``: whichever version is active) with its own
exclusive reply queue, half the requests with the binary body and half as JSON, and prints each
reply. ``--fire-and-forget`` publishes without ``reply_to``: the worker computes and sends nothing.
The message contract is docs/queue-protocol.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import aio_pika
import numpy as np
import orjson
from aio_pika.abc import AbstractIncomingMessage

from common.errors import DeadlineExceeded, ModelNotLoaded, Overloaded
from common.wire import (
    HEADER_STATUS,
    JSON_CONTENT_TYPE,
    TENSORS_CONTENT_TYPE,
    PredictReply,
    decode_reply,
    encode_frame,
    request_headers,
)


class Producer:
    """One connection, one confirming channel, one exclusive reply queue consumed once."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel,
                 exchange: aio_pika.abc.AbstractExchange,
                 replies: aio_pika.abc.AbstractQueue) -> None:
        self._exchange = exchange
        self._replies = replies
        self._pending: dict[str, asyncio.Future[PredictReply]] = {}

    @classmethod
    async def create(cls, connection: aio_pika.abc.AbstractConnection) -> Producer:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange("inferno.predict")
        replies = await channel.declare_queue(exclusive=True)
        producer = cls(channel, exchange, replies)
        await replies.consume(producer._on_reply, no_ack=True)
        return producer

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():  # else late or duplicate: drop it
            status = (message.headers or {}).get(HEADER_STATUS)
            future.set_result(decode_reply(
                message.body, status if isinstance(status, (str, bytes)) else None))

    async def predict(self, model: str, body: bytes, content_type: str, timeout_s: float,
                      wait: bool = True) -> dict[str, Any] | None:
        deadline = time.time() + timeout_s
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[PredictReply] = asyncio.get_running_loop().create_future()
        if wait:
            self._pending[correlation_id] = future
        message = aio_pika.Message(
            body, content_type=content_type, correlation_id=correlation_id,
            reply_to=self._replies.name if wait else None, message_id=correlation_id,
            expiration=timeout_s, headers=request_headers(deadline))
        try:
            await self._exchange.publish(message, routing_key=model, mandatory=True,
                                         timeout=timeout_s)
            if not wait:
                return None
            async with asyncio.timeout(deadline - time.time()):
                return (await future).result()  # raises the worker's error, typed
        except aio_pika.exceptions.PublishError:  # first: a subclass of DeliveryError
            raise ModelNotLoaded(f"no queue is bound to '{model}'") from None
        except aio_pika.exceptions.DeliveryError:
            raise Overloaded(f"the queue of '{model}' is full") from None
        except TimeoutError:
            raise DeadlineExceeded("no reply before the deadline") from None
        finally:
            self._pending.pop(correlation_id, None)


def bag_request(seed: int, as_json: bool) -> tuple[bytes, str]:
    tokens = np.arange(seed, seed + 4, dtype=np.int64).reshape(1, 4)
    mask = np.array([[True, True, False, True]])
    if as_json:
        return orjson.dumps({"inputs": {"tokens": {"data": tokens.tolist()},
                                        "mask": {"data": mask.tolist()}}}), JSON_CONTENT_TYPE
    return encode_frame({"tokens": tokens, "mask": mask}), TENSORS_CONTENT_TYPE


async def run(url: str, count: int, fire_and_forget: bool) -> list[dict[str, Any] | None]:
    async with await aio_pika.connect_robust(url) as connection:
        producer = await Producer.create(connection)
        requests = [bag_request(i, as_json=i % 2 == 1) for i in range(count)]
        return await asyncio.gather(*(
            producer.predict("bag", body, content_type, timeout_s=10,
                             wait=not fire_and_forget) for body, content_type in requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--fire-and-forget", action="store_true")
    args = parser.parse_args()
    for index, outputs in enumerate(asyncio.run(run(args.url, args.count,
                                                    args.fire_and_forget))):
        shown = {n: a.tolist() for n, a in outputs.items()} if outputs else "(no reply)"
        print(index, shown)


if __name__ == "__main__":
    main()
