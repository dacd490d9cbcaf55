"""A log handler that never blocks the event loop on its stream.

A ``StreamHandler`` writes in the logging thread: when nobody reads the stream (a full pipe, a
stalled log collector, a terminal paused with Ctrl-S), the write blocks and with it the event loop
that serves every request. Here the caller only formats the line (in its own context: the
request id is a context variable) and queues it; one thread writes what has queued, many lines
per write. When the queue is full the line is dropped and counted, and the writer says how many
it dropped as soon as the stream takes lines again: losing log lines is better than stopping to
serve.

A line may be logged at any point of another log call (a signal handler, a finaliser, a weakref
callback), so queueing takes no lock: ``queue.SimpleQueue.put`` is reentrant, where
``queue.Queue.put`` waits for the lock its interrupted caller holds, forever.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import TextIO

__all__ = ["BackgroundHandler"]

MAX_QUEUED = 10_000
"""Lines waiting for the stream; at about 200 bytes each, 2 MB at most."""
WAIT_S = 1.0
"""The longest ``flush`` and ``close`` wait for the writer: a stream nobody reads never drains."""

_STOP = object()


class BackgroundHandler(logging.Handler):
    def __init__(self, stream: TextIO, max_queued: int = MAX_QUEUED) -> None:
        super().__init__()
        self.stream = stream
        self._lines: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._max_queued = max_queued
        self._dropped = 0  # written by callers, read and reset by the writer: a count, not exact
        self._writer = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._writer.start()

    @property
    def dropped(self) -> int:
        """Lines dropped since the writer last reported drops."""
        return self._dropped

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._lines.qsize() >= self._max_queued:  # a bound, give or take a racing caller
            self._dropped += 1
        else:
            self._lines.put(line)

    def _write(self) -> None:
        while True:
            lines = [self._lines.get()]
            while True:  # everything queued meanwhile goes in the same write
                try:
                    lines.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in lines
            text = [line for line in lines if isinstance(line, str)]
            flushed = [line for line in lines if isinstance(line, threading.Event)]
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                text.append(f"{dropped} log line(s) dropped: the log stream was not read fast "
                            f"enough")
            # A closed or broken stream: nowhere is left to log to.
            with contextlib.suppress(OSError, ValueError):
                if text:
                    self.stream.write("\n".join(text) + "\n")
                    self.stream.flush()
            for written in flushed:
                written.set()
            if stop:
                return

    def flush(self) -> None:
        """Until what was queued before is written (``WAIT_S`` at most): before another
        process writes on the same stream."""
        if self._writer.is_alive():
            written = threading.Event()
            self._lines.put(written)
            written.wait(WAIT_S)

    def close(self) -> None:
        """Write what is queued (``WAIT_S`` at most)."""
        if self._writer.is_alive():
            self._lines.put(_STOP)
            self._writer.join(WAIT_S)
        super().close()
