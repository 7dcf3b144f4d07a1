"""The CAN rule engine: frames in, fired triggers and health events out. Pure.

Time is the frame's timestamp (the bus's or the log's), never the clock, so replaying a
log gives the same answer every time. Per rule:

    armed ──condition true (for hold_ms)──► fire, disarmed
    disarmed ──released (for release_ms)──► armed

"Released" is "condition false", or with hysteresis "clearly back" (fire above 130 kph,
re-arm below 120). A falling-edge rule swaps the two and starts disarmed. A rule starts
armed: a gateway that boots while the light bar is already on reports it (cameras that
already record say so; the policy merges repeats).

Signal loss: a rule's frame absent for ``signal_loss_cycles`` periods (the period from
the rule, the DBC, or learned from the first frames), or for ``silence_s`` while the
period is not known, is a health event, once, and its return another; never a trigger.
A gap that long also breaks a pending hold or release: timing needs continuous frames.
Only well-formed frames count as the signal being present.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.protocol.models import TriggerKind
from triggers.can.rules import CompiledRule, Number, RulesFile, compile_rules

_LEARN_INTERVALS = 5
_CAN_ERR_BUSOFF = 0x40  # SocketCAN error class bit (linux/can/error.h)
_NOTHING: tuple[Sequence[Fired], Sequence[RuleHealth]] = ((), ())


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
class RuleHealth:
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
    def __init__(
        self,
        rules: Iterable[CompiledRule],
        *,
        signal_loss_cycles: float = 5.0,
        silence_s: float = 5.0,
    ) -> None:
        self.rules = list(rules)
        self.loss_cycles = signal_loss_cycles
        self.silence_s = silence_s
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

    @classmethod
    def compile(
        cls, rules: RulesFile, databases: Sequence[Any], source: str = "rules"
    ) -> RuleEngine:
        """An engine for a rules file, checked and compiled against the DBC databases."""
        return cls(
            compile_rules(rules, databases, source),
            signal_loss_cycles=rules.signal_loss_cycles,
            silence_s=rules.silence_s,
        )

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

    def start(self, t: float) -> None:
        """The time listening began (on the frames' clock): a rule whose frame has not come
        by the loss limit after it is reported never seen. Without it, the first frame."""
        self._started = t

    def lost_rules(self) -> list[str]:
        return sorted(name for name, state in self._states.items() if state.lost)

    def _limit(self, state: _State) -> float:
        """Silence longer than this is signal loss."""
        return self.loss_cycles * state.cycle_s if state.cycle_s is not None else self.silence_s

    def process(
        self,
        frame_id: int,
        extended: bool,
        data: bytes,
        t: float,
        *,
        is_error: bool = False,
        is_remote: bool = False,
    ) -> tuple[Sequence[Fired], Sequence[RuleHealth]]:
        self._frames += 1
        if self._started is None:
            self._started = t
        if is_error:
            self._counts["error_frames"] += 1
            if frame_id & _CAN_ERR_BUSOFF:
                self._counts["bus_off"] += 1
            return _NOTHING
        if is_remote:  # a request for the frame, with no data of its own
            self._counts["remote_frames"] += 1
            return _NOTHING
        rules = self._by_frame.get((frame_id, extended))
        if rules is None:
            return _NOTHING  # not a frame any rule reads: the common case, kept cheap
        fired: list[Fired] = []
        health: list[RuleHealth] = []
        for rule, state in rules:
            # The common case inline (this runs for every frame a rule reads); malformed
            # frames, multiplexed pages, timing and health through the helpers.
            if len(data) < rule.min_length or rule.mux is not None:
                value = self._read(rule, data)
                if value is None:
                    continue
            else:
                value = rule.extract(data)
            if state.since is not None or state.learning or state.lost:
                self._present(rule, state, t, health)
            state.last_seen = t
            if rule.ignore and value in rule.ignore:
                continue
            if self._step(rule, state, value, t):
                self._counts["fired"] += 1
                cfg = rule.config
                fired.append(
                    Fired(cfg.name, cfg.kind, cfg.source_group, t, value, rule.frame_id, rule.where)
                )
        return fired, health

    def tick(self, now: float) -> list[RuleHealth]:
        """Signal-loss check at ``now`` (bus time for a live bus, log time in a replay)."""
        health = []
        for rule in self.rules:
            state = self._states[rule.name]
            if state.lost:
                continue
            last = state.last_seen if state.last_seen is not None else self._started
            if last is None:
                continue  # not listening yet
            silent = now - last
            if silent > self._limit(state):
                state.lost, state.since = True, None
                self._counts["health.signal_lost"] += 1
                seen = (
                    f"never seen in {silent:.1f} s"
                    if state.last_seen is None
                    else f"not seen for {silent:.1f} s"
                )
                expected = (
                    f"expected every {state.cycle_s * 1000:.0f} ms"
                    if state.cycle_s is not None
                    else "period not known yet"
                )
                health.append(
                    RuleHealth(rule.name, "signal_lost", now, f"{rule.where} {seen} ({expected})")
                )
        return health

    def _read(self, rule: CompiledRule, data: bytes) -> Number | None:
        """The rule's value in a frame; None for a malformed frame or another mux page."""
        if len(data) < rule.min_length:
            self._counts["malformed.short_frame"] += 1
            return None
        if rule.mux is not None:
            mux_value = rule.mux[0](data)
            if mux_value not in rule.mux[2]:
                self._counts["malformed.unknown_multiplexer"] += 1
                return None
            if mux_value not in rule.mux[1]:
                return None  # another multiplexed page of the same message
        return rule.extract(data)

    def _present(
        self, rule: CompiledRule, state: _State, t: float, health: list[RuleHealth]
    ) -> None:
        """A well-formed frame of the rule's signal at ``t`` (before ``last_seen`` moves)."""
        if state.since is not None and t - (state.last_seen or t) > self._limit(state):
            state.since = None  # a hold or release does not span a gap in the signal
        if state.learning:
            self._learn(state, t)
        if state.lost:
            self._restored(rule, state, t, health)

    @staticmethod
    def _learn(state: _State, t: float) -> None:
        """The rule's frame period, from the median of its first intervals."""
        if state.last_seen is None:
            return
        state.intervals.append(t - state.last_seen)
        if len(state.intervals) == _LEARN_INTERVALS:
            state.cycle_s = max(statistics.median(state.intervals), 0.001)
            state.learning = False

    def _restored(
        self, rule: CompiledRule, state: _State, t: float, health: list[RuleHealth]
    ) -> None:
        state.lost = False
        self._counts["health.signal_restored"] += 1
        health.append(RuleHealth(rule.name, "signal_restored", t, f"{rule.where} is back"))

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
