"""String tensors over the real broker: the ``strings`` test model (text -> upper, length)
behind a facade and a worker, and asynchronous producers publishing string requests straight to
its queue in the documented wire format (docs/queue-protocol.md)."""

from __future__ import annotations

import asyncio
import json
import struct

import aio_pika
import numpy as np
import orjson
import pytest

from common.errors import InvalidInput
from common.wire import JSON_CONTENT_TYPE, TENSORS_CONTENT_TYPE, decode_frame, encode_frame
from examples.producer import Producer
from tests.distributed.conftest import Cluster, wait_ready
from tests.integration.conftest import error_of
from worker.reconciler import Reconciler

pytestmark = pytest.mark.asyncio

ROWS = ["héllo wörld ✓", "", "日本語", "straße", "🙂 ok"]


def string_frame(name: str, values: list[str]) -> bytes:
    """A tensor body written by hand from docs/queue-protocol.md (not with encode_frame): u32 H,
    the space-padded header JSON (4 + H a multiple of 8), then ``count + 1`` u32 offsets and the
    UTF-8 blob."""
    blobs = [v.encode() for v in values]
    offsets = [0]
    for blob in blobs:
        offsets.append(offsets[-1] + len(blob))
    data = struct.pack(f"<{len(offsets)}I", *offsets) + b"".join(blobs)
    header = json.dumps({"tensors": [{"name": name, "dtype": "string", "shape": [len(values)],
                                      "offset": 0, "nbytes": len(data)}]}).encode()
    header += b" " * (-(4 + len(header)) % 8)
    return struct.pack("<I", len(header)) + header + data


async def _serving(running: Cluster, worker: Reconciler, model: str) -> None:
    """Until the worker consumes the model's queue and its alias is bound (no facade here)."""
    async with asyncio.timeout(30):
        while model not in worker.loaded:
            await worker.reconcile()


async def test_v1_strings_through_the_broker(running: Cluster) -> None:
    await running.worker(preload=["strings"])
    facade, client = await running.facade()
    await wait_ready(facade)
    response = await client.post("/v1/models/strings:predict",
                                 json={"inputs": {"text": {"data": ROWS}}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["upper"] == {"dtype": "string", "shape": [len(ROWS)],
                                "data": [s.upper() for s in ROWS]}
    assert outputs["length"] == {"dtype": "int64", "shape": [len(ROWS)],
                                 "data": [len(s) for s in ROWS]}
    assert outputs["upper"]["data"][0] == "HÉLLO WÖRLD ✓"
    # Concurrent requests share batches through the queue and each keeps its rows.
    bodies = [[f"é{i}-{j}" for j in range(1 + i % 3)] for i in range(12)]
    answers = await asyncio.gather(*(client.post(
        "/v1/models/strings:predict", json={"inputs": {"text": {"data": rows}}})
        for rows in bodies))
    for rows, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"]["upper"]["data"] == [s.upper() for s in rows]
    # The facade refuses what the worker would (the same check, before the queue).
    bad = await client.post("/v1/models/strings:predict",
                            json={"inputs": {"text": {"data": ["ok", "✓" * 22]}}})
    assert bad.status_code == 422, bad.text
    assert error_of(bad)["message"] == ("Input 'text': element 1 is 66 bytes long; the limit "
                                        "is 64 (max_string_bytes)")


async def test_a_producer_publishes_strings_in_the_wire_format(running: Cluster) -> None:
    worker, _ = await running.worker(preload=["strings"])
    await _serving(running, worker, "strings")
    hand_made = string_frame("text", ROWS)
    # The hand-written body reads back as what the library writes (header spacing aside).
    for body in (hand_made, encode_frame({"text": np.array(ROWS, dtype=object)})):
        arrays, extra = decode_frame(body)
        assert extra == {} and arrays["text"].tolist() == ROWS
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        producer = await Producer.create(connection)
        framed = await producer.predict("strings", hand_made, TENSORS_CONTENT_TYPE,
                                        timeout_s=10)
        as_json = await producer.predict("strings", orjson.dumps(
            {"inputs": {"text": {"data": ROWS}}, "outputs": ["upper"]}), JSON_CONTENT_TYPE,
            timeout_s=10)
        # The worker validates a producer's strings with the facade's own check.
        with pytest.raises(InvalidInput) as info:
            await producer.predict("strings", string_frame("text", ["ok", "a" * 65]),
                                   TENSORS_CONTENT_TYPE, timeout_s=10)
        assert "Input 'text': element 1 is 65 bytes long" in info.value.message
        bad_utf8 = bytearray(string_frame("text", ["ok", "xy"]))
        bad_utf8[-1] = 0xFF
        with pytest.raises(InvalidInput) as info:
            await producer.predict("strings", bytes(bad_utf8), TENSORS_CONTENT_TYPE,
                                   timeout_s=10)
        assert "Input 'text': element 1" in info.value.message
        assert "UTF-8" in info.value.message
    assert framed is not None and list(framed) == ["upper", "length"]
    upper = framed["upper"]
    assert isinstance(upper, np.ndarray) and upper.dtype == object
    assert upper.tolist() == [s.upper() for s in ROWS]
    np.testing.assert_array_equal(framed["length"], [len(s) for s in ROWS])
    assert framed["length"].dtype == np.int64
    assert as_json is not None and list(as_json) == ["upper"]
    assert np.asarray(as_json["upper"]).tolist() == [s.upper() for s in ROWS]
