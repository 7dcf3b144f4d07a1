"""One physical event → one trigger; an old advert played again → rejected.

Format v1 sensors count: every new advert content carries counter + 1, and the sensor
repeats that advert many times a second for seconds. So, per sensor:
- a counter above the last accepted one is a new event (FRESH);
- the last counter again, within the burst window of its first sighting, is the same
  event repeating (REPEAT);
- anything else — the last counter after the window, or a lower counter — is a REPLAY.

Legacy devices have no counter: adverts closer together than the window belong to one
event (a sliding window), and replays cannot be told apart.

Pure: time comes in as an argument. The accepted counters are persisted by CounterStore
before an event leaves the source, so a restart cannot reopen a replay window.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mesh.clock import NS


class Verdict(Enum):
    FRESH = "fresh"
    REPEAT = "repeat"
    REPLAY = "replay"


@dataclass
class SensorState:
    counter: int
    first_seen_ns: int
    last_seen_ns: int


class CounterGate:
    def __init__(self, burst_window_s: float, states: dict[str, SensorState] | None = None) -> None:
        self.window_ns = int(burst_window_s * NS)
        self.states: dict[str, SensorState] = dict(states or {})

    def check(self, sensor_id: str, counter: int, now_ns: int) -> Verdict:
        state = self.states.get(sensor_id)
        if state is None or counter > state.counter:
            self.states[sensor_id] = SensorState(counter, now_ns, now_ns)
            return Verdict.FRESH
        if counter == state.counter and now_ns - state.first_seen_ns <= self.window_ns:
            state.last_seen_ns = now_ns
            return Verdict.REPEAT
        return Verdict.REPLAY


class QuietGate:
    """For counterless (legacy) adverts: a new event after ``window`` of silence."""

    def __init__(self, burst_window_s: float) -> None:
        self.window_ns = int(burst_window_s * NS)
        self.last_seen: dict[str, int] = {}

    def check(self, sensor_id: str, now_ns: int) -> Verdict:
        last = self.last_seen.get(sensor_id)
        self.last_seen[sensor_id] = now_ns
        if last is not None and now_ns - last <= self.window_ns:
            return Verdict.REPEAT
        return Verdict.FRESH


class CounterStore:
    """The last accepted counter per sensor, on disk (SQLite, synchronous=FULL)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS counters (sensor_id TEXT PRIMARY KEY, "
            "counter INTEGER NOT NULL, first_seen_ns INTEGER NOT NULL)"
        )

    def load(self) -> dict[str, SensorState]:
        rows = self._conn.execute("SELECT sensor_id, counter, first_seen_ns FROM counters")
        return {sid: SensorState(counter, seen, seen) for sid, counter, seen in rows}

    def save(self, sensor_id: str, counter: int, first_seen_ns: int) -> None:
        """Durable when it returns (one fsync): called before the event is emitted."""
        self._conn.execute(
            "INSERT INTO counters (sensor_id, counter, first_seen_ns) VALUES (?, ?, ?) "
            "ON CONFLICT(sensor_id) DO UPDATE SET counter = excluded.counter, "
            "first_seen_ns = excluded.first_seen_ns WHERE excluded.counter > counters.counter",
            (sensor_id, counter, first_seen_ns),
        )

    def close(self) -> None:
        self._conn.close()
