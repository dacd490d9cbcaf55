"""``Blobs`` (common/transport/blobs.py) on a real Redis: what a claimed tensor costs in copies
between its array and the store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import numpy as np
import pytest
from redis.asyncio.connection import AbstractConnection

from common.transport.blobs import Blobs
from common.wire.framing import decode_frame, encode_frame
from tests.services import RedisSpace

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def blobs(redis_space: RedisSpace) -> AsyncIterator[Blobs]:
    store = Blobs(redis_space.url, redis_space.prefix, threshold=262_144)
    yield store
    await store.aclose()


async def test_a_claimed_tensor_is_not_copied_by_us_on_its_way_to_redis_and_back(
        blobs: Blobs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies that remain lie outside our code. On the way in, redis-py keeps the array's
    memoryview as a chunk of its own (it never joins a memoryview, nor a value over its 6,000-
    byte cutoff) and the kernel copies it into the socket; the stdlib event loop of Python 3.11
    joins the chunks once more (``WriteTransport.writelines``), uvloop and 3.12 do not. On the
    way out, what redis-py returns is already a copy of the socket's read: asyncio's
    ``StreamReader`` buffers and slices it, and redis-py 8.2 cuts the CRLF off with one more
    slice (``_AsyncRESPBase._read``). The decoded array is a view on those bytes."""
    array = np.arange(1 << 18, dtype=np.float32).reshape(4, -1)  # 1 MiB
    claims = blobs.claims(array.nbytes)
    assert claims is not None
    body = encode_frame({"x": array}, claim=claims)
    (key,) = claims.blobs
    sent: list[bytes | memoryview] = []
    send = AbstractConnection.send_packed_command

    async def spy(self: AbstractConnection, command: Iterable[bytes],
                  check_health: bool = True) -> None:
        sent.extend(chunks := list(command))
        await send(self, chunks, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", spy)
    await blobs.put(claims, ttl_s=30)
    assert any(np.shares_memory(np.frombuffer(chunk, np.uint8), array) for chunk in sent), \
        "the tensor was copied before redis-py handed it to the socket"

    fetched = await blobs.fetch([key])
    arrays, _ = decode_frame(body, blobs=fetched)
    np.testing.assert_array_equal(arrays["x"], array)
    assert np.shares_memory(arrays["x"], np.frombuffer(fetched[key], np.uint8)), \
        "decoding copied the bytes redis-py returned"
