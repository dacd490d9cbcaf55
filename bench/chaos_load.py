"""The chaos soak's load: steady predict requests through every facade, each one's outcome kept.

Each client is one keep-alive HTTP/1.1 connection (asyncio streams) to one facade, sending
requests one after another at its share of ``--rate``. A request carries a unique
``x-request-id`` and an input that makes its answer checkable: the ``bag`` model's ``sum`` of
``tokens = [[n, 1, 2]]`` must be ``n + 3``. Its outcome is one of:

- ``ok``: 200 with this request's own answer;
- an error code: the facade answered with a clear error (``{"error": {"code": ...}}``);
- ``lost``: no answer within the request's deadline + 1 s (or the connection died without one);
- ``facade_stopped``: the connection died without an answer, and it was one that a facade
  process held when the soak stopped it (``chaos_faults``' ``facade_stall``): the request was in
  that process's hands alone, and its client learnt of the loss at once, not at its deadline;
- ``duplicate``: a 200 carrying another request's answer: a reply delivered to the wrong
  caller, or a second reply to a caller (over HTTP/1.1 an extra response on the connection
  shows as the answer to the caller's next request). Either way a caller got a reply that was
  not its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

__all__ = ["DUPLICATE", "LOST", "OK", "STOPPED", "Load", "Outcome"]

LOST = "lost"
OK = "ok"
DUPLICATE = "duplicate"
STOPPED = "facade_stopped"


@dataclass(slots=True)
class Outcome:
    request_id: str
    facade: int
    sent: float
    """``time.monotonic()`` when the request was written."""
    done: float = 0.0
    result: str = ""
    """``ok``, ``lost``, ``duplicate`` or the error code."""
    detail: str = ""


@dataclass
class Load:
    facade_urls: list[str]
    model: str
    concurrency: int
    rate: float
    """Requests per second in all (each client sends at most its share)."""
    timeout_ms: int
    stopped_ports: set[int] = field(default_factory=set)
    """Client ports of connections held by a facade process the soak stopped (filled in by
    the fault, read here)."""
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._client(i, self.facade_urls[i % len(self.facade_urls)])
                               for i in range(self.concurrency)))

    async def _client(self, index: int, url: str) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        facade = index % len(self.facade_urls)
        interval = self.concurrency / self.rate
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        local_port = 0
        next_at = time.monotonic() + interval * index / self.concurrency
        try:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stop.wait()
                    if self._stop.is_set():
                        return
                next_at = max(next_at + interval, time.monotonic())
                number = next(self._numbers)
                outcome = Outcome(f"chaos-{number}", facade, time.monotonic())
                self.outcomes.append(outcome)
                try:
                    if streams is None:
                        streams = await asyncio.wait_for(
                            asyncio.open_connection(host, port), 2)
                        local_port = streams[1].get_extra_info("sockname")[1]
                    async with asyncio.timeout(self.timeout_ms / 1000 + 1.0):
                        await self._one(streams, host, number, outcome)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    if not outcome.result:
                        # A timeout is a loss wherever it happened: the stopped process's
                        # parent must end it well within a request's deadline.
                        stopped = (not isinstance(exc, TimeoutError)
                                   and local_port in self.stopped_ports)
                        outcome.result = STOPPED if stopped else LOST
                        outcome.detail = f"{type(exc).__name__}: {exc}"
                    if streams is not None:
                        streams[1].close()
                        streams = None
                outcome.done = time.monotonic()
        finally:
            if streams is not None:
                streams[1].close()

    async def _one(self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                   host: str, number: int, outcome: Outcome) -> None:
        reader, writer = streams
        body = orjson.dumps({"inputs": {"tokens": {"data": [[number, 1, 2]]},
                                        "mask": {"data": [[True, True, True]]}},
                             "outputs": ["sum"], "timeout_ms": self.timeout_ms})
        writer.write(b"".join((
            f"POST /v1/models/{self.model}:predict HTTP/1.1\r\nhost: {host}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"x-request-id: {outcome.request_id}\r\n\r\n".encode(), body)))
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length = 0
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        answer = orjson.loads(await reader.readexactly(length)) if length else {}
        if status == 200:
            total = answer.get("outputs", {}).get("sum", {}).get("data")
            if total == [number + 3]:
                outcome.result = OK
            else:
                outcome.result = DUPLICATE
                outcome.detail = f"answer {total} for input {number}"
        else:
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            outcome.result = str(code or f"http_{status}")
            outcome.detail = str(error.get("message", ""))[:200] if isinstance(error, dict) \
                else ""
