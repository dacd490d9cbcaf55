"""The chaos soak's outcome of a request (bench/chaos_load.py), against a scripted HTTP server:
its own answer is ``ok``, another request's answer a ``duplicate``, an error body its code, and
no answer within the deadline + 1 s ``lost``."""

from __future__ import annotations

import asyncio

import orjson

from bench.chaos_load import DUPLICATE, LOST, OK, Load


async def test_each_outcome_is_told_apart() -> None:
    behaviours = iter(["right", "wrong", "error", "silent"])
    silent: list[int] = []
    again = asyncio.Event()  # a request after the silent one: that one's wait has ended

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            request = orjson.loads(await reader.readexactly(length))
            number = request["inputs"]["tokens"]["data"][0][0]
            behaviour = next(behaviours, "silent")
            if behaviour == "silent":
                silent.append(number)
                if len(silent) == 2:
                    again.set()
                await asyncio.Event().wait()  # never answers
            status, body = {
                "right": (200, {"outputs": {"sum": {"data": [number + 3]}}}),
                "wrong": (200, {"outputs": {"sum": {"data": [number + 4]}}}),
                "error": (503, {"error": {"code": "broker_unavailable", "message": "gone"}}),
            }[behaviour]
            payload = orjson.dumps(body)
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}\r\n\r\n"
                         .encode() + payload)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    load = Load([f"http://127.0.0.1:{port}"], "bag", concurrency=1, rate=1000, timeout_ms=50)
    running = asyncio.create_task(load.run())
    async with asyncio.timeout(10):
        await again.wait()
    load.stop()
    await running
    server.close()
    assert [o.result for o in load.outcomes[:4]] == [OK, DUPLICATE, "broker_unavailable", LOST]
    lost = load.outcomes[3]
    assert 1.0 <= lost.done - lost.sent < 3.0  # the deadline (50 ms) + 1 s
