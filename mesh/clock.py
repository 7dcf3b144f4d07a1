"""Time, passed in: wall clock (UTC ns) for records, monotonic (ns) for durations."""

from __future__ import annotations

import time
from typing import Protocol

# Nanoseconds in a second: every time here is an integer of ns.
NS = 1_000_000_000


class Clock(Protocol):
    def wall_ns(self) -> int: ...

    def mono_ns(self) -> int: ...


class SystemClock:
    def wall_ns(self) -> int:
        return time.time_ns()

    def mono_ns(self) -> int:
        return time.monotonic_ns()


SYSTEM_CLOCK = SystemClock()


def ms_between(start_ns: int, end_ns: int) -> float:
    return (end_ns - start_ns) / 1e6
