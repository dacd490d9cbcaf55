"""The default load generator: N keep-alive HTTP/1.1 connections, each one request at a time.

On a 2-core machine the client competes with the server for CPU, and a general-purpose client
(httpx) spends more CPU per request than the server does. So the request bytes are encoded once;
each connection writes them, reads the head up to the blank line, then Content-Length bytes of
body, and loops. The loop runs in a *spawned* process (its own interpreter and GIL, nothing
inherited from the bench process) on uvloop when it is installed.

With several targets (the facades of a distributed run) connection *i* goes to target
*i mod n*: round-robin, so each facade carries an equal share of the connections.

Only 200 responses that complete inside the measurement window (after the warm-up) count towards
req/s and latencies; every non-200 response and every connection failure of the whole level,
warm-up included, counts as an error. The server's metrics are scraped by the same process at the
window's start and end (every endpoint at once, summed), so batch statistics cover the same
interval as the latencies; the generator's own CPU time over the window is reported too, to show
what it took from the server, and so is, read from ``/proc``, the CPU time of a server with no
metrics (``LevelSpec.server_pids``) and of a local broker and Redis (``broker_pids``,
``redis_pids``).

No third-party imports here: the spawned process starts in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.host import CpuTimes, busy_pct, cpu_times, processes_cpu_s
from bench.metrics import Snapshot, parse, total

__all__ = ["Endpoint", "Level", "LevelSpec", "LoadOutcome", "percentile", "read_response",
           "run_async", "run_level"]

GRACE_S = 10.0
"""How long in-flight requests may take after the window closes before they count as errors."""
CONNECT_RETRY_S = 0.01

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A server address and the pre-encoded request to send it."""

    host: str
    port: int
    request: bytes


@dataclass(frozen=True, slots=True)
class LevelSpec:
    targets: tuple[Endpoint, ...]
    """Where the predict requests go; connections are spread over them round-robin."""
    concurrency: int
    warmup_s: float
    duration_s: float
    model: str
    scrapes: tuple[Endpoint, ...]
    """Pre-encoded ``GET /metrics`` (``Connection: close``) of every endpoint whose totals are
    summed; empty to skip metrics."""
    server_pids: tuple[int, ...] = ()
    """Server processes whose CPU time is read from ``/proc`` over the window (no metrics)."""
    broker_pids: tuple[int, ...] = ()
    """The broker's process, read like ``server_pids``; empty when it is not on this machine."""
    redis_pids: tuple[int, ...] = ()
    """Redis's process, likewise."""


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    concurrency: int
    requests: int
    """200 responses completed inside the window."""
    errors: int
    window_s: float
    p50_s: float | None
    p99_s: float | None
    mean_s: float | None
    max_s: float | None
    metrics_before: Snapshot | None
    metrics_after: Snapshot | None
    client_cpu_s: float = 0.0
    """CPU time (user + system) the load generator itself used inside the window."""
    machine_busy_pct: float | None = None
    """Busy share of all the machine's cores inside the window (``bench.host``)."""
    server_cpu_s: float | None = None
    """CPU time the ``server_pids`` used inside the window; ``None`` without pids or readings."""
    broker_cpu_s: float | None = None
    """CPU time the ``broker_pids`` used inside the window, likewise."""
    redis_cpu_s: float | None = None
    """CPU time the ``redis_pids`` used inside the window, likewise."""


@dataclass(frozen=True, slots=True)
class _Failure:
    message: str


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open, of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP response: {head[:40]!r}")
    status = int(head[9:12])
    # Servers that send lower-case header names (uvicorn) skip the copy.
    lower = head if b"\r\ncontent-length:" in head else head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start >= 0:
        start += 17
        length = int(head[start:lower.index(b"\r\n", start)])
        body = await reader.readexactly(length) if length else b""
    elif b"\r\ntransfer-encoding: chunked" in lower:
        body = await _read_chunked(reader)
    else:
        raise ValueError("response has neither Content-Length nor chunked encoding")
    return status, body, b"\r\nconnection: close" not in lower


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Level:
    """One level's connections and tallies, inside the load-generator process.

    A driver for another transport subclasses it and overrides ``start_clients``
    (``bench.grpc_load``); the window, the scrapes and the tallies stay here.
    """

    def __init__(self, spec: LevelSpec) -> None:
        self.spec = spec
        self.latencies: list[float] = []
        self.errors = 0
        self.window_start = self.window_end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.machine_start: CpuTimes | None = None
        self.machine_end: CpuTimes | None = None
        self.pids_start: tuple[float | None, ...] = ()
        self.pids_end: tuple[float | None, ...] = ()

    @staticmethod
    async def _open(target: Endpoint) -> Streams:
        return await asyncio.open_connection(target.host, target.port)

    async def _reopen(self, target: Endpoint, writer: asyncio.StreamWriter | None
                      ) -> Streams | None:
        """A fresh connection, retried until the window ends (then ``None``)."""
        if writer is not None:
            writer.close()
        while time.perf_counter() < self.window_end:
            try:
                return await self._open(target)
            except OSError:
                self.errors += 1
                await asyncio.sleep(CONNECT_RETRY_S)
        return None

    async def client(self, target: Endpoint, streams: Streams) -> None:
        reader, writer = streams
        request, perf = target.request, time.perf_counter
        latencies, window_start, window_end = self.latencies, self.window_start, self.window_end
        try:
            while True:
                started = perf()
                if started >= window_end:
                    return
                try:
                    writer.write(request)
                    status, _, keep_alive = await read_response(reader)
                except (OSError, EOFError, ValueError, asyncio.IncompleteReadError,
                        asyncio.LimitOverrunError):
                    self.errors += 1
                    reopened = await self._reopen(target, writer)
                    if reopened is None:
                        return
                    reader, writer = reopened
                    continue
                finished = perf()
                if status != 200:
                    self.errors += 1
                elif window_start <= finished <= window_end:
                    latencies.append(finished - started)
                if not keep_alive:
                    reopened = await self._reopen(target, writer)
                    if reopened is None:
                        return
                    reader, writer = reopened
        finally:
            writer.close()

    async def start_clients(self, targets: list[Endpoint]) -> list[Coroutine[Any, Any, None]]:
        """Connect every client (before the window is set) and return their loops, not started."""
        connections = await asyncio.gather(*map(self._open, targets))
        return [self.client(t, c) for t, c in zip(targets, connections, strict=True)]

    async def _scrape_one(self, endpoint: Endpoint) -> Snapshot | None:
        try:
            reader, writer = await self._open(endpoint)
        except OSError:
            return None
        try:
            writer.write(endpoint.request)
            status, body, _ = await asyncio.wait_for(read_response(reader), 10.0)
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
            return None
        finally:
            writer.close()
        return parse(body.decode("utf-8", "replace"), self.spec.model) if status == 200 else None

    async def scrape(self) -> Snapshot | None:
        """The model's metric totals now, summed over every endpoint; ``None`` if any of them
        cannot be read (a partial sum would be a wrong number) or none is configured."""
        if not self.spec.scrapes:
            return None
        snapshots = await asyncio.gather(*map(self._scrape_one, self.spec.scrapes))
        if any(s is None for s in snapshots):
            return None
        return total(s for s in snapshots if s is not None)

    async def _scrape_window(self) -> tuple[Snapshot | None, Snapshot | None]:
        await asyncio.sleep(max(0.0, self.window_start - time.perf_counter()))
        self.cpu_start = time.process_time()
        self.machine_start = cpu_times()
        self.pids_start = self._pids_cpu()
        before = await self.scrape()
        await asyncio.sleep(max(0.0, self.window_end - time.perf_counter()))
        self.cpu_end = time.process_time()
        self.machine_end = cpu_times()
        self.pids_end = self._pids_cpu()
        return before, await self.scrape()

    def _pids_cpu(self) -> tuple[float | None, ...]:
        """CPU seconds now of the ``server_pids``, the ``broker_pids`` and the ``redis_pids``."""
        spec = self.spec
        return tuple(map(processes_cpu_s, (spec.server_pids, spec.broker_pids, spec.redis_pids)))

    async def run(self) -> LoadOutcome:
        spec = self.spec
        targets = [spec.targets[i % len(spec.targets)] for i in range(spec.concurrency)]
        loops = await self.start_clients(targets)
        self.window_start = time.perf_counter() + spec.warmup_s
        self.window_end = self.window_start + spec.duration_s
        scraper = asyncio.create_task(self._scrape_window())
        clients = [asyncio.create_task(loop) for loop in loops]
        _, stuck = await asyncio.wait(
            clients, timeout=self.window_end - time.perf_counter() + GRACE_S)
        for task in stuck:  # a request the server never answered
            task.cancel()
            self.errors += 1
        before, after = await scraper
        ordered = sorted(self.latencies)
        server, broker, redis = map(_spent, self.pids_start, self.pids_end)
        return LoadOutcome(
            concurrency=spec.concurrency, requests=len(ordered), errors=self.errors,
            window_s=spec.duration_s, p50_s=percentile(ordered, 50),
            p99_s=percentile(ordered, 99),
            mean_s=sum(ordered) / len(ordered) if ordered else None,
            max_s=ordered[-1] if ordered else None,
            metrics_before=before, metrics_after=after,
            client_cpu_s=self.cpu_end - self.cpu_start,
            machine_busy_pct=busy_pct(self.machine_start, self.machine_end),
            server_cpu_s=server, broker_cpu_s=broker, redis_cpu_s=redis)


def _spent(start: float | None, end: float | None) -> float | None:
    """CPU seconds between two readings; ``None`` if either is missing."""
    return None if start is None or end is None else end - start


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``main`` to completion on a new event loop: uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _child(spec: LevelSpec, level: type[Level], conn: Any) -> None:
    """Body of the spawned process: run the level, send back a ``LoadOutcome`` or a failure."""
    try:
        conn.send(run_async(level(spec).run()))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        conn.send(_Failure(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_level(spec: LevelSpec, level: type[Level] = Level) -> LoadOutcome:
    """Run one level in a spawned process and wait for its outcome (``level``: the driver, a
    module-level class the child imports by name)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(spec, level, sender), name="bench-load",
                              daemon=True)
    process.start()
    sender.close()
    try:
        # Start-up (spawn, imports, connects) + warm-up + window + in-flight grace.
        if not receiver.poll(30.0 + spec.warmup_s + spec.duration_s + GRACE_S):
            raise RuntimeError("load generator did not report back in time")
        result = receiver.recv()
    except EOFError:
        raise RuntimeError(f"load generator exited with code {process.exitcode}") from None
    finally:
        receiver.close()
        process.join(5.0)
        if process.is_alive():
            process.terminate()
            process.join(5.0)
        with contextlib.suppress(ValueError):
            process.close()
    if isinstance(result, _Failure):
        raise RuntimeError(f"load generator failed: {result.message}")
    assert isinstance(result, LoadOutcome)
    return result
