"""Logging set-up: one JSON object per line (``ts``, ``level``, ``logger``, ``msg``, request id).

The request id lives in a context variable set by the facade's middleware, so every line logged
while serving a request carries it without passing it around.

Every line is redacted as it is written: a URL's password (``amqp://guest:***@host``) never
reaches the log, whoever logged it (our code, aio-pika, redis-py, a traceback).
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from common.log_writer import BackgroundHandler

__all__ = ["JsonFormatter", "RedactingFormatter", "configure_logging", "redact",
           "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("inferno_request_id", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged too.
# uvicorn's color_message repeats msg with terminal colour codes.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message", "asctime", "taskName", "color_message"}


# scheme://user:password@ (user may be empty, as in redis://:password@host).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@]+@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    if "://" not in text:  # the common case costs one substring search
        return text
    return _URL_PASSWORD.sub(r"\1***@", text)


class RedactingFormatter(logging.Formatter):
    """The plain-text format, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Set by the facade's middleware while a request is served; a record may carry its own.
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line, default=str).decode())


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route every logger (uvicorn's too) through one handler on stderr, written by a thread
    of its own (``common.log_writer``): a stalled stderr must not stall the server."""
    handler = BackgroundHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else RedactingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
