"""The cluster's state store on Redis (redis.asyncio).

Every key name lives in ``RedisKeys``. Per model: ``<p>:model:<name>:active`` (a version),
``<p>:model:<name>:desired`` (a set of versions) and ``<p>:model:<name>:overrides`` (a hash:
version → its configuration override), with ``<p>:models`` indexing the names;
``<p>:model:<name>:files:<version>`` (a hash: path → bytes) keeps the files of a version a load
wrote (model files, ``INFERNO_ALLOW_MODEL_FILES``) for replicas on other hosts. Per
worker: ``<p>:worker:<id>``, its heartbeat as JSON, expiring after the heartbeat TTL. Changes are
published on ``<p>:events``. Multi-key changes run as Lua scripts, so two facades writing at once
never interleave.

Redis errors become ``StateUnavailable`` here. Nothing on the predict path calls the store (the
facade serves from its cached view), so a Redis outage stops admin calls, not serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, cast

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from common.errors import StateUnavailable
from common.state.store import RESYNC, EventKind, ModelState, StateEvent, StateStore, WorkerInfo

__all__ = ["RedisKeys", "RedisStateStore"]

log = logging.getLogger(__name__)


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.models = f"{prefix}:models"
        self.events = f"{prefix}:events"
        self.workers = f"{prefix}:workers"
        """Sorted set: worker id → when its heartbeat expires (Redis server time, ms). An index,
        so that listing workers never scans the keyspace of a Redis shared with others."""

    def active(self, model: str) -> str:
        return f"{self.prefix}:model:{model}:active"

    def desired(self, model: str) -> str:
        return f"{self.prefix}:model:{model}:desired"

    def overrides(self, model: str) -> str:
        return f"{self.prefix}:model:{model}:overrides"

    def files(self, model: str, version: int) -> str:
        return f"{self.prefix}:model:{model}:files:{version}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"


# KEYS: models index, active, desired, events, overrides. ARGV: name, version, mode, event,
# override, "1" when the override is given. mode "init": only if the model has no state;
# "activate": active + desired; "load": add to desired, and set the version's override when one
# is given ("" deletes it); "unload": remove from desired with its override, clear active if it
# was this version.
_UPDATE_MODEL = """
local name, version, mode, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local override, given = ARGV[5], ARGV[6] == '1'
if mode == 'init' then
  -- A model that was ever known keeps its state, even with every version unloaded.
  if redis.call('SISMEMBER', KEYS[1], name) == 1 then return 0 end
  redis.call('SET', KEYS[2], version)
  redis.call('SADD', KEYS[3], version)
elseif mode == 'activate' then
  redis.call('SET', KEYS[2], version)
  redis.call('SADD', KEYS[3], version)
elseif mode == 'load' then
  redis.call('SADD', KEYS[3], version)
  if given and override ~= '' then redis.call('HSET', KEYS[5], version, override)
  elseif given then redis.call('HDEL', KEYS[5], version) end
else
  redis.call('SREM', KEYS[3], version)
  redis.call('HDEL', KEYS[5], version)
  if redis.call('GET', KEYS[2]) == version then redis.call('DEL', KEYS[2]) end
end
redis.call('SADD', KEYS[1], name)
redis.call('PUBLISH', KEYS[4], event)
return 1
"""


# KEYS: worker key, workers index, events. ARGV: WorkerInfo JSON, ttl ms, worker id, event or "".
# The index scores are the server's clock, so hosts with skewed clocks agree; every heartbeat
# also prunes the ids whose heartbeats expired.
_PUT_WORKER = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
if ARGV[4] ~= '' then redis.call('PUBLISH', KEYS[3], ARGV[4]) end
return 1
"""


@contextlib.contextmanager
def state_errors() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StateUnavailable(f"State store unavailable: {type(exc).__name__}: {exc}") from exc


class RedisStateStore(StateStore):
    def __init__(self, url: str, prefix: str = "inferno",
                 tls: dict[str, Any] | None = None) -> None:
        self.keys = RedisKeys(prefix)
        # Short timeouts, no retry storms: a caller should learn of an outage in about a second.
        # ``tls``: the ``ssl_*`` options of a rediss:// URL (common.tls.redis_ssl_options).
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                           retry_on_timeout=False, **(tls or {}))
        self._update = self._redis.register_script(_UPDATE_MODEL)
        self._put_worker = self._redis.register_script(_PUT_WORKER)
        self._closed = asyncio.Event()

    async def start(self) -> None:
        with state_errors():
            await self._redis.ping()

    async def aclose(self) -> None:
        self._closed.set()
        await self._redis.aclose()

    async def models(self) -> dict[str, ModelState]:
        with state_errors():
            names = sorted(_text(n) for n in await self._redis.smembers(self.keys.models))
            if not names:
                return {}
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    self._read_model(pipe, name)
                results = await pipe.execute()
        return {name: _model_state(name, *results[_READS * i:_READS * (i + 1)])
                for i, name in enumerate(names)}

    def _read_model(self, pipe: Any, name: str) -> None:
        """Queue the ``_READS`` reads of one model's state on ``pipe``."""
        pipe.get(self.keys.active(name))
        pipe.smembers(self.keys.desired(name))
        pipe.hgetall(self.keys.overrides(name))

    async def _change(self, name: str, version: int, mode: str,
                      override: str | None = None) -> ModelState:
        event = orjson.dumps({"kind": EventKind.MODEL.value, "name": name})
        with state_errors():
            await self._update(keys=[self.keys.models, self.keys.active(name),
                                     self.keys.desired(name), self.keys.events,
                                     self.keys.overrides(name)],
                               args=[name, str(version), mode, event, override or "",
                                     "0" if override is None else "1"])
            async with self._redis.pipeline(transaction=True) as pipe:
                self._read_model(pipe, name)
                results = await pipe.execute()
        return _model_state(name, *results)

    async def init_model(self, name: str, version: int) -> ModelState:
        return await self._change(name, version, "init")

    async def set_active(self, name: str, version: int) -> ModelState:
        return await self._change(name, version, "activate")

    async def set_desired(self, name: str, version: int, loaded: bool,
                          override: str | None = None) -> ModelState:
        return await self._change(name, version, "load" if loaded else "unload", override)

    async def put_version_files(self, name: str, version: int,
                                files: Mapping[str, bytes]) -> None:
        mapping: dict[Any, bytes] = dict(files)  # one HSET: a replica sees all or none of them
        with state_errors():
            await self._redis.hset(self.keys.files(name, version), mapping=mapping)

    async def version_files(self, name: str, version: int) -> dict[str, bytes] | None:
        with state_errors():
            files = cast(dict[bytes, bytes],
                         await self._redis.hgetall(self.keys.files(name, version)))
        return {_text(path): data for path, data in files.items()} or None

    async def put_worker(self, info: WorkerInfo, ttl_s: float, announce: bool = True) -> None:
        event = orjson.dumps({"kind": EventKind.WORKER.value, "name": info.worker_id})
        with state_errors():
            await self._put_worker(
                keys=[self.keys.worker(info.worker_id), self.keys.workers, self.keys.events],
                args=[orjson.dumps(info.to_dict()), max(1, int(ttl_s * 1000)), info.worker_id,
                      event if announce else b""])

    async def remove_worker(self, worker_id: str) -> None:
        event = orjson.dumps({"kind": EventKind.WORKER.value, "name": worker_id})
        with state_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.worker(worker_id))
                pipe.zrem(self.keys.workers, worker_id)
                pipe.publish(self.keys.events, event)
                await pipe.execute()

    async def workers(self) -> list[WorkerInfo]:
        with state_errors():
            ids = cast(list[bytes], await self._redis.zrange(self.keys.workers, 0, -1))
            # An id whose heartbeat expired and was not pruned yet reads as None: skipped.
            values = (await self._redis.mget([self.keys.worker(i.decode()) for i in ids])
                      if ids else [])
        return [WorkerInfo.from_dict(orjson.loads(v)) for v in values if v is not None]

    def events(self) -> AsyncIterator[StateEvent]:
        pubsub = self._redis.pubsub()
        return self._follow(pubsub)

    async def _follow(self, pubsub: Any) -> AsyncIterator[StateEvent]:
        """Events until closed. After each (re)subscription comes a ``RESYNC`` event: changes
        made before it may have been missed, so listeners re-read everything."""
        backoff = 0.1
        try:
            while not self._closed.is_set():
                try:
                    await pubsub.subscribe(self.keys.events)
                    async for message in pubsub.listen():
                        if message.get("type") == "subscribe":
                            # Confirmed by Redis: from here on no change is missed.
                            backoff = 0.1
                            yield RESYNC
                            continue
                        if message.get("type") != "message":
                            continue
                        event = _parse_event(message["data"])
                        if event is not None:
                            yield event
                except (RedisError, OSError) as exc:
                    log.warning("state events lost (%s); resubscribing in %.1fs", exc, backoff)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await self._closed.wait()
                    backoff = min(backoff * 2, 5.0)
        finally:
            # Bounded: a connection cut mid-read can leave the close waiting on it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 2)


def _parse_event(data: bytes) -> StateEvent | None:
    """A published event, or ``None`` (logged) for one this version does not know: a newer
    process's event kind, or something else published on the channel. Listeners go on."""
    try:
        fields = orjson.loads(data)
        return StateEvent(EventKind(fields["kind"]), str(fields["name"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("state event ignored (%s: %s): %r", type(exc).__name__, exc, data[:200])
        return None


_READS = 3
"""Reads of one model's state (``_read_model``): active, desired, overrides."""


def _model_state(name: str, active: bytes | None, desired: set[bytes],
                 overrides: dict[bytes, bytes]) -> ModelState:
    return ModelState(name, int(active) if active else None, frozenset(int(v) for v in desired),
                      {int(v): _text(o) for v, o in overrides.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
