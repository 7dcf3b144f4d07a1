"""A vehicle on a CAN bus: DBC messages at their cycle times, signals following a scenario,
mixed with background traffic (a recorded capture, or generated noise).

Scenario (YAML, docs/can-rules.md):

    duration_s: 12
    messages:                      # sent every cycle_ms, signals raw 0 unless set
      StrgWheel_PolicePkg: {cycle_ms: 100}
      EngVehicleSpThrottle_CG1: {cycle_ms: 20}
    steps:
      - {at: 1.0, set: {PoliceAux1Lamp_B_Rq: 1}}
      - {at: 2.0, ramp: {Veh_V_ActlEng: {to: 145, over: 4.0}}}
    background: {log: capture.log}         # or {synthetic: {ids: 40, rate_hz: 1500}}

Frames come out in time order, deterministic for a given scenario.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Annotated, Any

import can
import cantools
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh.documents import DocumentError, load_yaml
from mesh.protocol.codec import readable_loc

Value = int | float


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MessagePlan(_Strict):
    cycle_ms: Annotated[float, Field(gt=0, le=60_000)] = 100.0
    signals: dict[str, Value] = Field(default_factory=dict)  # initial values


class Ramp(_Strict):
    to: Value
    over: Annotated[float, Field(gt=0)]


class Step(_Strict):
    at: Annotated[float, Field(ge=0)]
    set: dict[str, Value] = Field(default_factory=dict)
    ramp: dict[str, Ramp] = Field(default_factory=dict)


class Synthetic(_Strict):
    ids: Annotated[int, Field(ge=1, le=400)] = 40
    rate_hz: Annotated[float, Field(gt=0, le=20_000)] = 1500.0
    seed: int = 1


class BackgroundTraffic(_Strict):
    log: str | None = None  # relative to the scenario file
    synthetic: Synthetic | None = None


class Scenario(_Strict):
    duration_s: Annotated[float, Field(gt=0, le=24 * 3600)]
    messages: dict[str, MessagePlan]
    steps: list[Step] = Field(default_factory=list)
    background: BackgroundTraffic | None = None


class ScenarioError(ValueError):
    pass


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        return Scenario.model_validate(load_yaml(path))
    except DocumentError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc, problem = readable_loc(Scenario, first)
        key = ".".join(str(p) for p in loc)
        raise ScenarioError(f"{path}: key '{key}': {problem}") from None


class VehicleSimulator:
    def __init__(
        self, scenario: Scenario, databases: Sequence[Any], *, base_dir: Path | None = None
    ) -> None:
        self.scenario = scenario
        self.base_dir = base_dir or Path()
        self._messages = {}
        for name in scenario.messages:
            for db in databases:
                try:
                    self._messages[name] = db.get_message_by_name(name)
                    break
                except KeyError:
                    continue
            else:
                raise ScenarioError(f"message {name!r} is in none of the DBC files")
        self._owner = self._index_signals()
        for step in scenario.steps:
            for signal in [*step.set, *step.ramp]:
                self._resolve(signal)

    def _index_signals(self) -> dict[str, list[str]]:
        owner: dict[str, list[str]] = {}
        for name, message in self._messages.items():
            for signal in message.signals:
                owner.setdefault(signal.name, []).append(name)
        return owner

    def _resolve(self, signal: str) -> tuple[str, str]:
        """'Message.Signal', or a signal name unique among the scenario's messages."""
        if "." in signal:
            message, name = signal.split(".", 1)
            if message in self._messages and name in {
                s.name for s in self._messages[message].signals
            }:
                return message, name
        elif len(self._owner.get(signal, [])) == 1:
            return self._owner[signal][0], signal
        raise ScenarioError(
            f"signal {signal!r}: not in the scenario's messages, or ambiguous (use Message.Signal)"
        )

    def value_at(self, message: str, signal: str, t: float) -> Value:
        # Unset signals are raw 0, i.e. physical ``offset``: a zeroed field, and always
        # encodable (physical 0 is not when the offset is positive).
        default = self._messages[message].get_signal_by_name(signal).offset
        value: Value = self.scenario.messages[message].signals.get(signal, default)
        for step in sorted(self.scenario.steps, key=lambda s: s.at):
            if step.at > t:
                break
            for name, v in step.set.items():
                if self._resolve(name) == (message, signal):
                    value = v
            for name, ramp in step.ramp.items():
                if self._resolve(name) == (message, signal):
                    done = min(1.0, (t - step.at) / ramp.over)
                    value = value + (ramp.to - value) * done
        return value

    def _vehicle(self) -> Iterator[tuple[float, can.Message]]:
        # Frame k of a message is at k x its cycle, computed, not summed (0.1 added ten
        # times is 0.9999…, which would miss a step at 1.0).
        queue: list[tuple[float, int, str, int]] = []
        order = count()
        for name in self._messages:
            heapq.heappush(queue, (0.0, next(order), name, 0))
        while queue:
            t, _, name, k = heapq.heappop(queue)
            if t >= self.scenario.duration_s:
                continue
            message = self._messages[name]
            values = {s.name: self.value_at(name, s.name, t) for s in message.signals}
            try:
                data = message.encode(values, strict=False)
            except (ValueError, OverflowError, cantools.database.errors.Error) as exc:
                raise ScenarioError(
                    f"message {name!r} at t={t:.3f} s: cannot encode {values}: {exc}"
                ) from None
            yield (
                t,
                can.Message(
                    arbitration_id=message.frame_id,
                    data=data,
                    is_extended_id=message.is_extended_frame,
                    timestamp=t,
                ),
            )
            cycle_s = self.scenario.messages[name].cycle_ms / 1000
            heapq.heappush(queue, ((k + 1) * cycle_s, next(order), name, k + 1))

    def _background(self) -> Iterator[tuple[float, can.Message]]:
        bg = self.scenario.background
        if bg is None:
            return
        if bg.log is not None:
            path = Path(bg.log) if Path(bg.log).is_absolute() else self.base_dir / bg.log
            frames = list(can.LogReader(str(path)))
            if not frames:
                return
            start = frames[0].timestamp
            span = frames[-1].timestamp - start + 0.001
            loop = 0
            while True:  # the capture again and again until the scenario ends
                for msg in frames:
                    t = loop * span + msg.timestamp - start
                    if t >= self.scenario.duration_s:
                        return
                    yield (
                        t,
                        can.Message(
                            arbitration_id=msg.arbitration_id,
                            data=bytes(msg.data),
                            is_extended_id=msg.is_extended_id,
                            timestamp=t,
                        ),
                    )
                loop += 1
        if bg.synthetic is not None:
            yield from _synthetic(
                bg.synthetic,
                self.scenario.duration_s,
                {m.frame_id for m in self._messages.values()},
            )

    def frames(self) -> Iterator[tuple[float, can.Message]]:
        """Every frame of the scenario, in time order (t in seconds from its start)."""
        yield from heapq.merge(self._vehicle(), self._background(), key=lambda x: x[0])


def _synthetic(
    spec: Synthetic, duration_s: float, avoid: set[int]
) -> Iterator[tuple[float, can.Message]]:
    """Deterministic noise: ``ids`` standard ids at periods summing to ``rate_hz``, each
    frame a changing counter and fixed bytes (what cyclic ECU traffic looks like)."""
    rng = random.Random(spec.seed)
    ids: list[int] = []
    while len(ids) < spec.ids:
        frame_id = rng.randrange(0x080, 0x7F0)
        if frame_id not in avoid and frame_id not in ids:
            ids.append(frame_id)
    period = spec.ids / spec.rate_hz
    payloads = {i: bytearray(rng.randbytes(8)) for i in ids}
    queue = [(rng.uniform(0, period), i) for i in ids]
    heapq.heapify(queue)
    while queue:
        t, frame_id = heapq.heappop(queue)
        if t >= duration_s:
            continue
        data = payloads[frame_id]
        data[0] = (data[0] + 1) & 0xFF
        yield t, can.Message(arbitration_id=frame_id, data=bytes(data), timestamp=t)
        heapq.heappush(queue, (t + period, frame_id))


async def play(
    frames: Iterator[tuple[float, can.Message]], bus: can.BusABC, *, speed: float = 1.0
) -> int:
    """Send the frames on a bus at their times (``speed`` > 1 is faster); returns how many."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    for t, msg in frames:
        delay = start + t / speed - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        bus.send(msg)
        sent += 1
    return sent


def write_log(
    frames: Iterator[tuple[float, can.Message]], path: Path | str, *, start_time: float = 0.0
) -> int:
    """Write the frames to a log file (format from the suffix: .log candump, .asc, .blf …)."""
    written = 0
    with can.Logger(str(path)) as logger:
        for t, msg in frames:
            msg.timestamp = start_time + t
            msg.channel = "can0"
            logger(msg)
            written += 1
    return written
