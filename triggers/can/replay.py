"""Replaying a recorded drive through the rules: what would have fired, and when.

Any format python-can's LogReader reads (candump -L .log, .asc, .blf, .trc, .csv …).
Deterministic: the engine only ever sees the log's own timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import can

from triggers.can.engine import Fired, Health, RuleEngine

TICK_S = 0.1  # how often (in log time) signal loss is checked


def replay(
    path: Path | str, engine: RuleEngine, *, realtime: bool = False
) -> Iterator[Fired | Health]:
    """Yield what fires and every health event, in log order. ``realtime`` paces the
    frames at the speed they were recorded."""
    # Vector .asc keeps times relative to a start date in its header unless told otherwise:
    # asked for absolute times, as every other format gives them.
    options = {"relative_timestamp": False} if str(path).lower().endswith(".asc") else {}
    reader = can.LogReader(str(path), **options)
    frames = can.MessageSync(reader, timestamps=True) if realtime else reader
    next_tick: float | None = None
    for msg in frames:
        t = msg.timestamp
        if next_tick is None:
            next_tick = t + TICK_S
        if t >= next_tick:
            yield from engine.tick(t)
            next_tick = t + TICK_S
        fired, health = engine.process(
            msg.arbitration_id,
            msg.is_extended_id,
            bytes(msg.data),
            t,
            is_error=msg.is_error_frame,
            is_remote=msg.is_remote_frame,
        )
        yield from health
        yield from fired
