"""The floor of the queue hop: a bare aio-pika RPC with no HTTP, no validation and no model.

    python -m bench.rpc_floor [--requests 3000] [--body 2048]

An echo consumer and a client in one process (two connections, as facade and worker have), in a
fresh vhost of the local RabbitMQ: publish with confirms to a durable queue, reply to the client's
exclusive queue, one request at a time. Its p50 is what ``--mode both`` reports as "added p50"
cannot go below on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.services import fresh_vhost


async def measure(url: str, requests: int, body_size: int) -> list[float]:
    async with await aio_pika.connect_robust(url) as worker, \
            await aio_pika.connect_robust(url) as client:
        worker_channel = await worker.channel()
        await worker_channel.set_qos(prefetch_count=64)
        queue = await worker_channel.declare_queue("echo", durable=True)

        async def echo(message: AbstractIncomingMessage) -> None:
            await worker_channel.default_exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to or "")
            await message.ack()

        await queue.consume(echo)
        channel = await client.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: AbstractIncomingMessage) -> None:
            waiting.pop(message.correlation_id or "").set_result(message.body)

        await replies.consume(on_reply, no_ack=True)
        body = b"x" * body_size
        latencies = []
        for index in range(requests):
            future = asyncio.get_running_loop().create_future()
            waiting[str(index)] = future
            started = time.perf_counter()
            await channel.default_exchange.publish(
                aio_pika.Message(body, correlation_id=str(index), reply_to=replies.name,
                                 expiration=10), routing_key="echo")
            await future
            latencies.append(time.perf_counter() - started)
        return latencies[requests // 6:]  # the first ones warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--body", type=int, default=2048, help="request body bytes")
    args = parser.parse_args()
    with fresh_vhost() as url:
        latencies = asyncio.run(measure(url, args.requests, args.body))
    print(f"bare aio-pika RPC, c=1, {args.body} B: p50 {statistics.median(latencies) * 1000:.2f} "
          f"ms, {len(latencies) / sum(latencies):.0f} req/s")


if __name__ == "__main__":
    main()
