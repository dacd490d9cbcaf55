"""``Lane``: which requests of one event-loop turn share a message. A group never passes the
version's row bound or the byte cap, except a request that passes one alone (it goes alone, never
refused), and requests keep their order."""

from __future__ import annotations

import asyncio

import numpy as np

from common.model.signature import Signature
from common.transport.amqp.coalescing import Lane, Pending
from common.wire.messages import PredictRequest
from tests.contract.configs import checked

SIGNATURE = Signature.model_validate({
    "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})


def pending(rows: int, nbytes: int = 8) -> Pending:
    inputs = {"x": np.zeros((rows, 3), np.float32)}
    request = PredictRequest(model="m", version=1, inputs=inputs,
                             checked=checked("m", SIGNATURE, inputs), deadline=0.0)
    return Pending(request, f"r{rows}", asyncio.get_running_loop().create_future(), nbytes)


def shapes(lane: Lane) -> list[list[int]]:
    return [[p.request.checked.rows for p in group] for group in lane.groups]


async def test_groups_are_bounded_by_rows() -> None:
    lane = Lane()
    for rows in (2, 3, 3, 1, 4):
        lane.gather(pending(rows), max_rows=8, max_bytes=1000)
    assert shapes(lane) == [[2, 3, 3], [1, 4]]


async def test_groups_are_bounded_by_bytes() -> None:
    lane = Lane()
    for nbytes in (40, 40, 30, 90):
        lane.gather(pending(1, nbytes), max_rows=100, max_bytes=100)
    assert [[p.nbytes for p in g] for g in lane.groups] == [[40, 40], [30], [90]]


async def test_a_request_past_a_bound_goes_alone() -> None:
    lane = Lane()
    lane.gather(pending(1), max_rows=4, max_bytes=100)
    lane.gather(pending(9), max_rows=4, max_bytes=100)
    lane.gather(pending(1, 500), max_rows=4, max_bytes=100)
    lane.gather(pending(1), max_rows=4, max_bytes=100)
    assert [len(g) for g in lane.groups] == [1, 1, 1, 1]


async def test_requests_keep_their_order() -> None:
    lane = Lane()
    requests = [pending(1) for _ in range(5)]
    for request in requests:
        lane.gather(request, max_rows=2, max_bytes=1000)
    assert [p for group in lane.groups for p in group] == requests
