"""``RowPrefetch``: the channel's message prefetch follows the rows per message, so a worker holds
about the same rows whether requests come one per message or in envelopes. What is tried: single
rows (no change), full envelopes (down to the floor), a mix, a move back to single rows, a
channel that fails the change (kept, retried later), and one change at a time."""

from __future__ import annotations

import asyncio

from common.transport.amqp.prefetch import RowPrefetch


class StandInChannel:
    def __init__(self, fail: bool = False) -> None:
        self.sets: list[int] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def set_qos(self, prefetch_count: int) -> None:
        await self.release.wait()
        if self.fail:
            raise ConnectionError("channel closed")
        self.sets.append(prefetch_count)


async def receive(prefetch: RowPrefetch, rows: int, messages: int) -> None:
    for _ in range(messages):
        prefetch.received(rows)
        await asyncio.sleep(0)  # a change in flight completes between messages


async def test_one_row_per_message_keeps_the_row_budget() -> None:
    channel = StandInChannel()
    prefetch = RowPrefetch(channel, rows=64, floor=2)
    await receive(prefetch, 1, 200)
    assert channel.sets == [] and prefetch.count == 64


async def test_full_envelopes_bring_it_down_to_what_holds_the_same_rows() -> None:
    channel = StandInChannel()
    prefetch = RowPrefetch(channel, rows=64, floor=2)
    await receive(prefetch, 32, 200)
    assert prefetch.count == 2  # 64 rows / 32 rows per message
    assert channel.sets[-1] == 2
    assert channel.sets == sorted(channel.sets, reverse=True)  # it only went down


async def test_it_follows_the_mean_and_comes_back_up() -> None:
    channel = StandInChannel()
    prefetch = RowPrefetch(channel, rows=64, floor=2)
    await receive(prefetch, 8, 200)
    assert abs(prefetch.count - 8) <= 2  # 64 / 8, within the slack
    await receive(prefetch, 1, 300)
    assert prefetch.count > 48  # single requests again: back near the row budget


async def test_never_below_the_floor_nor_above_the_budget() -> None:
    channel = StandInChannel()
    prefetch = RowPrefetch(channel, rows=8, floor=4)
    await receive(prefetch, 100, 100)
    assert prefetch.count == 4
    await receive(prefetch, 0, 300)  # a message counts at least one row
    assert prefetch.count == 8


async def test_a_failed_change_keeps_the_count_and_is_tried_again() -> None:
    channel = StandInChannel(fail=True)
    prefetch = RowPrefetch(channel, rows=64, floor=2)
    await receive(prefetch, 32, 50)
    assert prefetch.count == 64
    channel.fail = False
    await receive(prefetch, 32, 1)
    assert prefetch.count == 2


async def test_one_change_at_a_time() -> None:
    channel = StandInChannel()
    channel.release.clear()
    prefetch = RowPrefetch(channel, rows=64, floor=2)
    for _ in range(100):
        prefetch.received(32)
    await asyncio.sleep(0)
    channel.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(channel.sets) == 1
    prefetch.cancel()
