"""How fast cameras have been answering lately, to pace retries (pure: latencies in).

A retry sent to a camera whose ack is merely slow adds a command and another ack to a
mesh that is already behind; with every activation doing so, an overloaded gateway
retries itself into collapse (measured: at twice the soak rate this machine sustains,
189,482 acks came back for 2,994 useful ones). So no retry goes out sooner than
``factor`` times the recent 90th percentile of first-ack latencies, whatever the policy's
(shorter) deadline; while the mesh is healthy that floor is far below the deadline and
changes nothing.

The floor says how slow the *mesh* is, so one slow camera must not set it: each camera
counts once (its latest first answer), the percentile is taken over at least
``_MIN_CAMERAS`` cameras and is never the slowest camera's alone, and whatever it says,
the floor is capped (``pace_cap_ms``) and the first retry always goes out before the
command expires (``next_step``). Measured before this: one camera acking after 13 s and
then 25 s pushed the floor to 50 s; the first retry went out at 26 s, then none, and a
camera that had missed the broadcast ended `missed` after one attempt.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mesh.decide.policy import KindRules

# Fewer cameras than this say nothing yet about the mesh's pace.
_MIN_CAMERAS = 10
# The pace may stretch the wait for acks to at most this many ack deadlines ...
CAP_DEADLINES = 4
# ... and to at most this fraction of the command's time to live.
CAP_TTL_FRACTION = 1 / 3


class AckPace:
    """First-ack latencies of the last ``window`` cameras to answer a broadcast, one
    sample per camera (its latest): at the limit the camera heard from longest ago is
    forgotten."""

    def __init__(self, window: int = 256, factor: float = 2.0) -> None:
        self.factor = factor
        self.window = window
        self._latest: OrderedDict[str, float] = OrderedDict()

    def observe(self, camera_id: str, latency_ms: float) -> None:
        """A camera's first answer to an activation, ms after the command went out."""
        self._latest[camera_id] = latency_ms
        self._latest.move_to_end(camera_id)
        while len(self._latest) > self.window:
            self._latest.popitem(last=False)

    def retry_floor_ms(self) -> float:
        """The earliest a silent camera should be asked again (0: no floor yet), uncapped."""
        count = len(self._latest)
        if count < _MIN_CAMERAS:
            return 0.0
        ordered = sorted(self._latest.values())
        # The 90th percentile, but never the slowest camera on its own.
        p90 = ordered[min(count - 2, int(0.9 * count))]
        return self.factor * p90


def pace_cap_ms(rules: KindRules) -> float:
    """The most the pace may stretch a wait for acks, for this kind of activation."""
    return min(CAP_DEADLINES * rules.ack_deadline_ms, rules.command_ttl_s * 1000 * CAP_TTL_FRACTION)


@dataclass(frozen=True)
class NextStep:
    wait_ms: float  # wait this long for acks ...
    retry: bool  # ... then send to the silent cameras again (False: finish then)


def next_step(rules: KindRules, attempt: int, floor_ms: float, remaining_ms: float) -> NextStep:
    """After attempt ``attempt`` (0: the broadcast), with ``remaining_ms`` until the command
    expires: how long to wait for acks, and whether a retry follows.

    The wait is the policy's (growing) one, or the pace's floor capped by ``pace_cap_ms``,
    whichever is longer. While the policy allows retries, the first one always goes out
    before the command expires: its wait is at most half the time left (a retry needs
    time to arrive and be answered)."""
    remaining_ms = max(0.0, remaining_ms)
    wait_ms = max(float(rules.retry_wait_ms(attempt)), min(floor_ms, pace_cap_ms(rules)))
    if attempt == 0 and rules.max_retries > 0:
        wait_ms = min(wait_ms, remaining_ms / 2)
    wait_ms = min(wait_ms, remaining_ms)
    retry = attempt < rules.max_retries and 0 < wait_ms < remaining_ms
    return NextStep(wait_ms, retry)
