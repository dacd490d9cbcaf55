"""Plain HTTP calls of the tests that drive a live server process (urllib: no event loop)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from harness.process import free_port

__all__ = ["free_port", "request_json"]


def request_json(url: str, body: dict[str, Any] | None = None, token: str | None = None,
                 timeout: float = 60) -> tuple[int, Any]:
    """POST ``body`` (GET without one) and return the status and the decoded JSON answer,
    error answers included."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
