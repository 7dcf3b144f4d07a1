"""Process-wide settings for the long-running commands (gateway, cameras, demo).

Garbage collection: a gateway holds many long-lived objects (models, presence, the policy,
its clients) and makes many short-lived ones per message, so the default collector keeps
walking the long-lived ones. ``gc.freeze()`` of the start-up heap and a young-generation
threshold of 10,000 cut its total time about threefold and its longest pause likewise
(bench/gc_pauses.py; figures in docs/benchmarks.md). A much higher threshold saves more in
total but makes each young collection a longer pause, and tail latency matters more here.
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
