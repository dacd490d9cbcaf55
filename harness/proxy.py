"""A TCP proxy that can be cut: an outage of one link (to Redis or the broker) without touching
the shared server. The tests use ``CuttableProxy`` in their own event loop; the chaos soak
(``bench.chaos``) runs one in a thread of its own (``ThreadedProxy``), so that the load it
generates cannot starve the link of the processes behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["CuttableProxy", "ThreadedProxy"]

T = TypeVar("T")


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0
        """Connections accepted so far."""
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close every connection and refuse new ones until ``restore``."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self.drop()

    def drop(self) -> None:
        """Close every connection open now (new ones are accepted as before)."""
        for writer in list(self._pipes):
            writer.close()
        self._pipes.clear()

    async def restore(self) -> None:
        await self.start()  # same port

    def stall(self) -> None:
        """Stop forwarding, connections left open: a link that drops every packet (no reset,
        nothing for either side to notice but silence), until ``resume``."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def aclose(self) -> None:
        if self.serving:
            await self.cut()
        else:
            self.drop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._pipes.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            self._pipes.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


class ThreadedProxy:
    """A ``CuttableProxy`` on an event loop in a daemon thread, driven from any thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy",
                                        daemon=True)
        self.proxy = CuttableProxy(target_host, target_port)

    @property
    def port(self) -> int:
        return self.proxy.port

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def start(self) -> None:
        self._thread.start()
        self._call(self.proxy.start())

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def restore(self) -> None:
        if not self.proxy.serving:
            self._call(self.proxy.restore())

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.stall)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.resume)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self.proxy.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
