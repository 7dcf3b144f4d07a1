"""Cheap per-device limits for the gateway's intake, applied before any parsing.

Pure: the time is passed in (monotonic ns). Every map here is bounded; what happens at
each bound is said where it is.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mesh.clock import NS


@dataclass
class _Bucket:
    tokens: float
    at_ns: int


class KeyedRate:
    """A token bucket per key (a camera): ``burst`` at once, then ``rate_per_s``.

    At most ``max_keys`` buckets are kept, the least recently used dropped first: a key
    seen again after that starts with a full bucket, so the bound costs a flood of many
    keys at most one burst per key, never a genuine device its budget."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate needs rate_per_s > 0, burst >= 1 and max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now_ns: int) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now_ns)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed_s = max(0, now_ns - bucket.at_ns) / NS
            bucket.tokens = min(self.burst, bucket.tokens + elapsed_s * self.rate_per_s)
            bucket.at_ns = now_ns
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def wait_ns(self, key: str, now_ns: int) -> int:
        """How long until ``key`` may send again (0: now)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0
        tokens = bucket.tokens + max(0, now_ns - bucket.at_ns) / NS * self.rate_per_s
        return 0 if tokens >= 1 else int((1 - tokens) / self.rate_per_s * NS) + 1

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class DropWindow:
    """What one device had dropped in one window: summarised by one record."""

    key: str
    started_ns: int  # wall clock, for the record
    started_mono_ns: int
    dropped: int = 0
    last_ns: int = 0


class DropSummaries:
    """Counts a device's dropped messages per window instead of logging each one: the
    first drop opens a window; ``due`` hands back the windows older than ``window_s``.

    At most ``max_keys`` windows are open: past that, the oldest is handed back early
    (its summary is only written sooner, never lost)."""

    def __init__(self, window_s: float, max_keys: int) -> None:
        self.window_ns = int(window_s * NS)
        self.max_keys = max_keys
        self._open: OrderedDict[str, DropWindow] = OrderedDict()
        self._early: list[DropWindow] = []

    def drop(self, key: str, wall_ns: int, mono_ns: int) -> None:
        window = self._open.get(key)
        if window is None:
            window = DropWindow(key, wall_ns, mono_ns)
            self._open[key] = window
            while len(self._open) > self.max_keys:
                self._early.append(self._open.popitem(last=False)[1])
        window.dropped += 1
        window.last_ns = wall_ns

    def due(self, mono_ns: int, *, everything: bool = False) -> list[DropWindow]:
        """Windows to summarise now (oldest first); ``everything`` closes all of them."""
        done, self._early = self._early, []
        while self._open:
            key, window = next(iter(self._open.items()))
            if not everything and mono_ns - window.started_mono_ns < self.window_ns:
                break
            del self._open[key]
            done.append(window)
        return done

    def __len__(self) -> int:
        return len(self._open) + len(self._early)
