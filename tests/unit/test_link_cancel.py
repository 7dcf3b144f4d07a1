"""A link's task stops when cancelled, even when Python 3.11's asyncio.wait_for swallowed
the cancellation (gh-86296): aiomqtt waits with it for CONNACK, SUBACK and DISCONNECT, and
a camera link cancelled as its broker came back kept serving, its owner waiting forever
("task still running 30 s after cancel" in the broker-restart tests)."""

from __future__ import annotations

import asyncio

from bridge.mqtt.client import raise_if_cancelled


async def test_a_cancel_swallowed_by_wait_for_is_still_honoured() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[None] = loop.create_future()  # a CONNACK, say
    reached: list[str] = []

    async def connecting() -> None:
        await asyncio.wait_for(answer, 10)  # 3.11: the cancel below is swallowed here
        reached.append("after wait_for")
        raise_if_cancelled()
        reached.append("after the guard")
        await loop.create_future()  # serving: never returns by itself

    task = asyncio.create_task(connecting())
    await asyncio.sleep(0)  # it waits for the answer
    answer.set_result(None)  # the answer and the cancel in the same loop iteration
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert done == {task}, "the task went on after it was cancelled"
    assert task.cancelled()
    assert "after the guard" not in reached


async def test_the_guard_lets_a_task_that_was_not_cancelled_go_on() -> None:
    raise_if_cancelled()  # no cancellation asked: nothing raised
