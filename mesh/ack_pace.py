"""How fast cameras have been answering lately, to pace retries (pure: latencies in).

A retry sent to a camera whose ack is merely slow adds a command and another ack to a
mesh that is already behind; with every activation doing so, an overloaded gateway
retries itself into collapse (measured: at twice the soak rate this machine sustains,
189,482 acks came back for 2,994 useful ones). So no retry goes out sooner than
``factor`` times the recent 90th percentile of first-ack latencies, whatever the policy's
(shorter) deadline; while the mesh is healthy that floor is far below the deadline and
changes nothing.
"""

from __future__ import annotations

from collections import deque

# Fewer samples than this say nothing yet about the mesh's pace.
_MIN_SAMPLES = 20


class AckPace:
    def __init__(self, window: int = 256, factor: float = 2.0) -> None:
        self.factor = factor
        self._recent: deque[float] = deque(maxlen=window)

    def observe(self, latency_ms: float) -> None:
        """A camera's first answer to an activation, ms after the command went out."""
        self._recent.append(latency_ms)

    def retry_floor_ms(self) -> float:
        """The earliest a silent camera should be asked again (0: no floor yet)."""
        if len(self._recent) < _MIN_SAMPLES:
            return 0.0
        ordered = sorted(self._recent)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return self.factor * p90
