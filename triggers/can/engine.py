"""The CAN rule engine: frames in, fired triggers and health events out. Pure.

Time is the frame's timestamp (the bus's or the log's), never the clock, so replaying a
log gives the same answer every time. Per rule:

    armed ──condition true (for hold_ms)──► fire, disarmed
    disarmed ──released (for release_ms)──► armed

"Released" is "condition false", or with hysteresis "clearly back" (fire above 130 kph,
re-arm below 120). A falling-edge rule swaps the two and starts disarmed. A rule starts
armed: a gateway that boots while the light bar is already on reports it (cameras that
already record say so; the policy merges repeats).

Signal loss: once a rule's frame period is known (rule, DBC, or learned from the first
frames), a frame absent for ``signal_loss_cycles`` periods is a health event, once, and
its return another; never a trigger.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mesh.models import TriggerKind
from triggers.can.rules import CompiledRule, Number

_LEARN_INTERVALS = 5
_CAN_ERR_BUSOFF = 0x40  # SocketCAN error class bit (linux/can/error.h)
_NOTHING: tuple[Sequence[Fired], Sequence[Health]] = ((), ())


@dataclass(frozen=True)
class Fired:
    rule: str
    kind: TriggerKind
    group: str
    t: float
    value: Number
    frame_id: int
    where: str


@dataclass(frozen=True)
class Health:
    rule: str
    event: str  # signal_lost | signal_restored
    t: float
    detail: str


@dataclass(slots=True)
class _State:
    armed: bool
    since: float | None = None  # when the pending condition (fire or re-arm) began
    last_seen: float | None = None
    cycle_s: float | None = None
    intervals: list[float] = field(default_factory=list)
    lost: bool = False
    learning: bool = False  # no cycle time yet: the first intervals are being measured


class RuleEngine:
    def __init__(self, rules: Iterable[CompiledRule], *, signal_loss_cycles: float = 5.0) -> None:
        self.rules = list(rules)
        self.loss_cycles = signal_loss_cycles
        self._counts: Counter[str] = Counter()
        self._frames = 0  # an int, not a Counter entry: it is bumped on every frame
        self._states = {
            r.name: _State(
                armed=r.config.edge == "rising", cycle_s=r.cycle_s, learning=r.cycle_s is None
            )
            for r in self.rules
        }
        # Each rule with its state, by the frame it reads: one lookup per frame.
        self._by_frame: dict[tuple[int, bool], list[tuple[CompiledRule, _State]]] = {}
        for rule in self.rules:
            key = (rule.frame_id, rule.extended)
            self._by_frame.setdefault(key, []).append((rule, self._states[rule.name]))
        self._started: float | None = None

    @property
    def counters(self) -> Counter[str]:
        """A snapshot: frames, error_frames, bus_off, fired, malformed.*, health.*."""
        snapshot = Counter(self._counts)
        snapshot["frames"] = self._frames
        return snapshot

    @property
    def frame_ids(self) -> list[tuple[int, bool]]:
        """The (id, extended) pairs the rules need: everything else can be filtered out."""
        return sorted(self._by_frame)

    def process(
        self,
        frame_id: int,
        extended: bool,
        data: bytes,
        t: float,
        *,
        is_error: bool = False,
    ) -> tuple[Sequence[Fired], Sequence[Health]]:
        self._frames += 1
        if self._started is None:
            self._started = t
        if is_error:
            self._counts["error_frames"] += 1
            if frame_id & _CAN_ERR_BUSOFF:
                self._counts["bus_off"] += 1
            return _NOTHING
        rules = self._by_frame.get((frame_id, extended))
        if rules is None:
            return _NOTHING  # not a frame any rule reads: the common case, kept cheap
        fired: list[Fired] = []
        health: list[Health] = []
        for rule, state in rules:
            if state.learning:
                self._learn(rule, state, t)
            state.last_seen = t
            if state.lost:
                self._restored(rule, state, t, health)
            if len(data) < rule.min_length:
                self._counts["malformed.short_frame"] += 1
                continue
            if rule.mux is not None:
                mux_value = rule.mux[0](data)
                if mux_value not in rule.mux[2]:
                    self._counts["malformed.unknown_multiplexer"] += 1
                    continue
                if mux_value not in rule.mux[1]:
                    continue  # another multiplexed page of the same message
            value = rule.extract(data)
            if self._step(rule, state, value, t):
                self._counts["fired"] += 1
                cfg = rule.config
                fired.append(
                    Fired(cfg.name, cfg.kind, cfg.source_group, t, value, rule.frame_id, rule.where)
                )
        return fired, health

    def tick(self, now: float) -> list[Health]:
        """Signal-loss check at ``now`` (bus time for a live bus, log time in a replay)."""
        health = []
        for rule in self.rules:
            state = self._states[rule.name]
            if state.lost or state.cycle_s is None:
                continue
            last = state.last_seen if state.last_seen is not None else self._started
            if last is None:
                continue
            silent = now - last
            if silent > self.loss_cycles * state.cycle_s:
                state.lost = True
                self._counts["health.signal_lost"] += 1
                seen = "never seen" if state.last_seen is None else f"not seen for {silent:.1f} s"
                health.append(
                    Health(
                        rule.name,
                        "signal_lost",
                        now,
                        f"{rule.where} {seen} (expected every {state.cycle_s * 1000:.0f} ms)",
                    )
                )
        return health

    @staticmethod
    def _learn(rule: CompiledRule, state: _State, t: float) -> None:
        """The rule's frame period, from the median of its first intervals."""
        if state.last_seen is None:
            return
        state.intervals.append(t - state.last_seen)
        if len(state.intervals) == _LEARN_INTERVALS:
            state.cycle_s = max(statistics.median(state.intervals), 0.001)
            state.learning = False

    def _restored(self, rule: CompiledRule, state: _State, t: float, health: list[Health]) -> None:
        state.lost = False
        self._counts["health.signal_restored"] += 1
        health.append(Health(rule.name, "signal_restored", t, f"{rule.where} is back"))

    @staticmethod
    def _step(rule: CompiledRule, state: _State, value: Number, t: float) -> bool:
        """One value through the rule's armed/disarmed machine; True when it fires."""
        if state.armed:
            if not rule.fires(value):
                state.since = None
                return False
            since = state.since = t if state.since is None else state.since
            if (t - since) * 1000 >= rule.hold_ms:
                state.armed, state.since = False, None
                return True
            return False
        if not rule.rearms(value):
            state.since = None
            return False
        since = state.since = t if state.since is None else state.since
        if (t - since) * 1000 >= rule.release_ms:
            state.armed, state.since = True, None
        return False
