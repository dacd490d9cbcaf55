"""The floor of the queue hop: a bare aio-pika RPC with no HTTP, no validation and no model.

    python -m bench.rpc_floor [--requests 3000] [--body 2048] [--reply exclusive|direct|both]

An echo worker in a process of its own and a client (as facade and worker are), in a fresh vhost
of the local RabbitMQ: publish with confirms to a durable queue, reply to the client's exclusive
queue (``exclusive``, what Inferno does) or through RabbitMQ's direct reply-to
(``amq.rabbitmq.reply-to``), one request at a time. Its p50 is what ``--mode both`` reports as
"added p50" cannot go below on the same machine; ``--mode both`` measures it after its runs and
says how much of the queue hop is Inferno's own.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from multiprocessing.synchronize import Event

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from harness.services import DEFAULT_BROKER, fresh_vhost

__all__ = ["REPLY_MODES", "floor_latencies"]

REPLY_MODES = ("exclusive", "direct")
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
QUEUE = "echo"


async def _echo(url: str, ready: Event) -> None:
    async with await aio_pika.connect_robust(url) as connection:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=64)
        queue = await channel.declare_queue(QUEUE, durable=True)

        async def echo(message: AbstractIncomingMessage) -> None:
            # Not mandatory: RabbitMQ returns a mandatory publish to a direct reply-to address
            # as unroutable although it delivers it.
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to or "", mandatory=False)
            await message.ack()

        await queue.consume(echo)
        ready.set()
        await asyncio.Event().wait()


def _echo_process(url: str, ready: Event) -> None:
    asyncio.run(_echo(url, ready))


async def _client(url: str, requests: int, body_size: int, reply: str) -> list[float]:
    async with await aio_pika.connect_robust(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        if reply == "direct":  # consumed on the publishing channel, as RabbitMQ requires
            replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        else:
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
                                 expiration=10), routing_key=QUEUE)
            await future
            latencies.append(time.perf_counter() - started)
        return latencies[requests // 6:]  # the first ones warm up


def floor_latencies(root_url: str = DEFAULT_BROKER, requests: int = 2000, body_size: int = 2048,
                    reply: str = "exclusive") -> list[float]:
    """Round-trip seconds of ``requests`` sequential RPCs (the warm-up ones left out)."""
    with fresh_vhost(root_url) as url:
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        echo = context.Process(target=_echo_process, args=(url, ready), daemon=True)
        echo.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the echo worker did not start")
            return asyncio.run(_client(url, requests, body_size, reply))
        finally:
            echo.kill()
            echo.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--body", type=int, default=2048, help="request body bytes")
    parser.add_argument("--reply", choices=[*REPLY_MODES, "both"], default="both",
                        help="reply queue: the client's exclusive queue, direct reply-to, or "
                             "both in turn (default)")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER)
    args = parser.parse_args()
    for reply in REPLY_MODES if args.reply == "both" else (args.reply,):
        latencies = floor_latencies(args.broker_url, args.requests, args.body, reply)
        print(f"bare aio-pika RPC, reply to {reply}, c=1, {args.body} B: p50 "
              f"{statistics.median(latencies) * 1000:.2f} ms, "
              f"{len(latencies) / sum(latencies):.0f} req/s", flush=True)


if __name__ == "__main__":
    main()
