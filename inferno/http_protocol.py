"""uvicorn's httptools protocol, sending a response's head and body in one write.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start`` and
the body when it sends ``http.response.body``: two ``send`` calls and two TCP segments for every
response, which the client reads as two. Here the head waits for the next write on its
connection (the body, in the same task step for every response Inferno sends), and both go out
together; a head that nothing follows within the loop's turn (a streamed response whose body is
not ready yet) goes out alone at the end of that turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "HeadHoldingTransport"]

_HEAD = b"HTTP/"


class HeadHoldingTransport:
    """A transport that holds a write starting a response (``HTTP/``) until the next write or
    the end of the loop's turn; everything else passes through."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.writelines((head, data))  # uvloop: one vectored send
        elif data[:5] == _HEAD:
            self._head = bytes(data)
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.flush()
        self._transport.writelines(chunks)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadHoldingTransport(transport)  # type: ignore[assignment]
