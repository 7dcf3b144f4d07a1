"""Process-wide settings for the long-running commands (gateway, cameras, demo).

Garbage collection: a gateway holds many long-lived objects (models, presence, the policy,
its clients) and makes many short-lived ones per message. Measured with a gateway and 200
cameras in one process over 40 activations: the default collector spent ~1.4 s in total,
with full collections pausing up to 92 ms; after ``gc.freeze()`` of the start-up heap and a
young-generation threshold of 10,000 it spent ~0.3 s, longest pause 17 ms. (A threshold of
50,000 spent 0.1 s but paused up to 41 ms: tail latency matters more here.)
"""

from __future__ import annotations

import asyncio
import gc

YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the young generation less often (call once, early)."""
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)


def settle_heap() -> None:
    """Move everything alive now out of the collector's reach (call once start-up is done)."""
    gc.collect()
    gc.freeze()


async def settle_heap_later(delay_s: float = 2.0) -> None:
    """``settle_heap`` once the retained messages that follow a connect have arrived."""
    await asyncio.sleep(delay_s)
    settle_heap()
