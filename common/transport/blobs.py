"""The claim check: tensor bytes too large for the queue travel through Redis, and the message
carries their key (docs/queue-protocol.md, "Large tensors by reference").

A message whose frame claims tensors names their keys in its ``inferno-claims`` header (comma-
separated). Every key lies under ``<prefix>:blob:``: a worker refuses a message claiming any
other key, so that a producer can neither read nor delete the rest of the store through it.

- Requests: the facade stores a tensor of at least ``INFERNO_CLAIM_CHECK_BYTES`` (``SET`` with
  the request's remaining deadline as its TTL) before publishing; the worker fetches every claim
  of the messages it received in one event-loop turn with one ``MGET``, and deletes a request's
  claims once it is settled for good (acked, or refused into the dead letters), never when it
  goes back to the queue or moves to the retry queue, whose copy still claims them.
- Replies: the worker stores an output of that size the same way; the facade reads it with
  ``GETDEL``, or deletes it when nobody waits for the reply any more.

Deletion is the rule and the TTL the backstop: what a lost process leaves behind expires with
the request's deadline. Deletes of one turn go out as one ``UNLINK`` (Redis frees the memory off
its main thread).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from common.errors import InvalidInput, StateUnavailable
from common.wire.messages import header_text

__all__ = ["HEADER_CLAIMS", "Blobs", "Claims"]

log = logging.getLogger(__name__)

HEADER_CLAIMS = "inferno-claims"
"""Request and reply: the comma-separated keys the message's frame claims."""
CONNECTIONS = 32
"""Redis connections a process's blob store holds at most: a store or read beyond them waits
for one (Redis runs one command at a time, so more would only queue there) instead of failing,
as redis-py's own pool does past its 100."""
CONNECTION_WAIT_S = 10.0
"""How long a store or read waits for a connection before it is ``StateUnavailable``."""
Blob = bytes | memoryview


class Claims:
    """The ``common.wire.framing.Claim`` of one message: each tensor of at least ``threshold``
    bytes gets a key under ``namespace``, and its bytes wait here for ``Blobs.put``."""

    __slots__ = ("_namespace", "_threshold", "blobs")

    def __init__(self, namespace: str, threshold: int) -> None:
        self._namespace = namespace
        self._threshold = threshold
        self.blobs: dict[str, Blob] = {}

    def __call__(self, data: Blob) -> str | None:
        if len(data) < self._threshold:
            return None
        key = f"{self._namespace}{uuid.uuid4().hex}"
        self.blobs[key] = data
        return key

    @property
    def header(self) -> str:
        return ",".join(self.blobs)


class Blobs:
    """The claim check's store on Redis (its own connection pool: bytes, not the state's)."""

    def __init__(self, url: str, prefix: str, threshold: int,
                 tls: Mapping[str, Any] | None = None) -> None:
        self.namespace = f"{prefix}:blob:"
        self.threshold = threshold
        """Tensors of at least this many bytes travel by reference (0: none; claims are read
        all the same, whoever sent them)."""
        self._redis = redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(
            url, max_connections=CONNECTIONS, timeout=CONNECTION_WAIT_S, **(tls or {})))
        self._fetching: dict[str, list[asyncio.Future[dict[str, bytes | None]]]] = {}
        self._deleting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def claims(self, nbytes: int) -> Claims | None:
        """A message's claims, when a tensor body of ``nbytes`` may hold one."""
        return Claims(self.namespace, self.threshold) if self.claiming(nbytes) else None

    def claiming(self, nbytes: int) -> bool:
        return 0 < self.threshold <= nbytes

    def keys(self, header: object) -> list[str]:
        """The keys an ``inferno-claims`` header names; ``InvalidInput`` for one outside the
        namespace, or a header that is no string."""
        header = header_text(header)
        if not isinstance(header, str):
            raise InvalidInput(f"The {HEADER_CLAIMS} header must be a string of keys")
        keys = [k for k in header.split(",") if k]
        for key in keys:
            if not key.startswith(self.namespace):
                raise InvalidInput(f"Claim {key[:80]!r} lies outside the blob store's "
                                   f"namespace {self.namespace!r}")
        return keys

    async def put(self, claims: Claims, ttl_s: float) -> None:
        """Store the claimed bytes, expiring after ``ttl_s``; ``StateUnavailable`` on failure."""
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, data in claims.blobs.items():
                    pipe.set(key, data, px=ttl_ms)
                await pipe.execute()
        except RedisError as exc:
            self.delete(claims.blobs)  # some may have been stored
            raise StateUnavailable(f"Could not store a large tensor in Redis: {exc}") from None

    async def fetch(self, keys: list[str]) -> dict[str, bytes | None]:
        """Each key's bytes (``None``: absent), with the other fetches of this event-loop turn
        in one ``MGET``; ``StateUnavailable`` on failure."""
        if not keys:
            return {}
        future: asyncio.Future[dict[str, bytes | None]] = (
            asyncio.get_running_loop().create_future())
        if not self._fetching:
            asyncio.get_running_loop().call_soon(self._start, self._fetch_turn())
        for key in keys:
            self._fetching.setdefault(key, []).append(future)
        found = await future
        return {k: found.get(k) for k in keys}

    async def _fetch_turn(self) -> None:
        fetching, self._fetching = self._fetching, {}
        keys = list(fetching)
        waiting = {f for futures in fetching.values() for f in futures}
        try:
            values = await self._redis.mget(keys)
        except RedisError as exc:
            error = StateUnavailable(f"Could not read a large tensor from Redis: {exc}")
            for future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        found = dict(zip(keys, cast(list[bytes | None], values), strict=True))
        for future in waiting:
            if not future.done():
                future.set_result(found)

    async def take(self, keys: list[str]) -> dict[str, bytes | None]:
        """Each key's bytes, deleted as they are read (``GETDEL``)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.getdel(key)
                values = await pipe.execute()
        except RedisError as exc:
            self.delete(keys)
            raise StateUnavailable(f"Could not read a large tensor from Redis: {exc}") from None
        return dict(zip(keys, values, strict=True))

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in the background, with the other deletes of this event-loop turn."""
        keys = set(keys)
        if keys and not self._deleting:
            asyncio.get_running_loop().call_soon(self._start, self._delete_turn())
        self._deleting |= keys

    async def _delete_turn(self) -> None:
        keys, self._deleting = list(self._deleting), set()
        try:
            await self._redis.unlink(*keys)
        except RedisError as exc:  # they expire with their deadline
            log.warning("could not delete %d claimed blob(s): %s", len(keys), exc)

    def _start(self, turn: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(turn)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
