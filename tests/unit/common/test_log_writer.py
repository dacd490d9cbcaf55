"""The log handler behind every process's stderr never blocks its caller: tried with a real pipe
that nobody reads (its 64 KiB buffer fills after a few hundred lines), then read."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from common.log_writer import BackgroundHandler

ROOT = Path(__file__).resolve().parents[3]


def test_a_stream_nobody_reads_drops_lines_instead_of_blocking_then_says_so() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = BackgroundHandler(stream, max_queued=100)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test-log-writer")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        done = threading.Event()

        def log_a_lot() -> None:  # 20 MB: a blocking handler would stop at the first 64 KiB
            for i in range(20_000):
                logger.warning("line %d %s", i, "x" * 1000)
            done.set()

        threading.Thread(target=log_a_lot, daemon=True).start()
        assert done.wait(30), "logging blocked on a full pipe"
        assert handler.dropped > 0
        # Once the pipe is read again, the writer catches up and reports what it dropped.
        seen = b""
        deadline = time.monotonic() + 30
        while b"dropped" not in seen and time.monotonic() < deadline:
            seen = seen[-4096:] + os.read(read_end, 1 << 16)
        assert b"log line(s) dropped: the log stream was not read fast enough" in seen
    finally:
        logger.removeHandler(handler)
        os.close(read_end)  # a writer still blocked on the pipe gets EPIPE, and stops
        handler.close()
        with contextlib.suppress(BrokenPipeError):
            stream.close()


def test_close_writes_what_is_queued() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = BackgroundHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(3):
        handler.handle(logging.makeLogRecord({"msg": f"line {i}"}))
    handler.close()
    stream.close()
    with os.fdopen(read_end) as lines:
        assert lines.read() == "line 0\nline 1\nline 2\n"


class SlowStream(io.StringIO):
    def write(self, text: str) -> int:
        time.sleep(0.05)  # a line queued is not yet written when its caller goes on
        return super().write(text)


def test_flush_returns_once_what_was_queued_is_written() -> None:
    stream = SlowStream()
    handler = BackgroundHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(3):
        handler.handle(logging.makeLogRecord({"msg": f"line {i}"}))
    handler.flush()
    assert stream.getvalue() == "line 0\nline 1\nline 2\n"
    handler.close()


# Logs again at every line run inside a log call, as a signal handler, a finaliser (``__del__``)
# or a weakref callback may: the handler must not wait for a lock its own caller holds.
_NESTED = textwrap.dedent("""
    import logging, sys
    from common.log_writer import BackgroundHandler

    handler = BackgroundHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    nested = False

    def each_line(frame, event, arg):
        global nested
        if event == "line" and not nested:
            nested = True
            handler.handle(logging.makeLogRecord({"msg": "nested"}))
            nested = False
        return each_line

    sys.settrace(lambda frame, event, arg: None if nested else each_line)
    handler.handle(logging.makeLogRecord({"msg": "outer"}))
    sys.settrace(None)
    handler.close()
""")


def test_a_line_can_be_logged_at_any_point_of_another_log_call() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", _NESTED], env=env, capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("deadlocked: a line logged inside another log call waited for "
                             "a lock its caller held") from None
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert "outer" in lines and lines.count("nested") >= 3, done.stdout
