"""The pre-event ring's decisions (pure): what to drop, what a recording keeps.

The ring is the closed buffer segments, oldest first, each known by its first and last
frame's media time and its size. Nothing here touches a file or reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NS = 1_000_000_000


@dataclass(frozen=True)
class Span:
    first_ns: int
    last_ns: int
    bytes: int


def drop_for_age(ring: Sequence[Span], buffer_s: float, newest_ns: int) -> int:
    """How many of the oldest segments to drop so the ring still covers ``buffer_s``
    before ``newest_ns`` and no more: a segment goes once the next one alone reaches back
    far enough."""
    horizon = newest_ns - int(buffer_s * NS)
    drop = 0
    while drop + 1 < len(ring) and ring[drop + 1].first_ns <= horizon:
        drop += 1
    if ring and buffer_s <= 0:
        return len(ring)
    return drop


def drop_for_size(ring: Sequence[Span], other_bytes: int, max_bytes: int | None) -> int:
    """How many of the oldest segments to drop to keep the store (ring + ``other_bytes``:
    recordings and the open segment) within ``max_bytes``. Only buffer segments are ever
    dropped: when they are all gone and it is still too much, the caller stops recording
    (LOW_DISK)."""
    if max_bytes is None:
        return 0
    total = other_bytes + sum(s.bytes for s in ring)
    drop = 0
    while drop < len(ring) and total > max_bytes:
        total -= ring[drop].bytes
        drop += 1
    return drop


def keep_from(firsts: Sequence[int], command_at_ns: int, pre_event_s: float) -> int:
    """The index of the first segment a recording keeps, among the ring's segments and the
    open one (``firsts``: their first frames' times, oldest first): the newest that begins
    at or before ``command_at_ns - pre_event_s``, so the kept frames cover at least
    ``pre_event_s`` before the command; the oldest if none reaches back that far (the
    buffer is shorter). With no segment at all, 0."""
    target = command_at_ns - int(pre_event_s * NS)
    chosen = 0
    for i, first in enumerate(firsts):
        if first <= target:
            chosen = i
    return chosen
