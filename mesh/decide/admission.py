"""Admission: does a trigger become a new activation, merge into a recent one, or get refused?

"Bursts are not events": a sensor repeats itself many times a second and QoS1 may
deliver a trigger twice. One (unit, kind, source) makes at most one activation per
cooldown window, measured from the trigger that was accepted (a fixed window, so a
continuous burst re-activates once per window and cameras that are already recording
just say so). Time is passed in; the state is rebuilt from the log after a restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mesh.clock import NS
from mesh.decide.policy import KindRules, Policy
from mesh.protocol.models import TriggerEvent, TriggerKind

# Every code ``admit`` refuses with (the metrics show each at 0 from the start).
REFUSAL_CODES = ("kind_disabled", "unauthenticated", "stale", "future")


@dataclass(frozen=True)
class Accepted:
    activation_id: str
    rules: KindRules


@dataclass(frozen=True)
class Suppressed:
    activation_id: str
    reason: str


@dataclass(frozen=True)
class Refused:
    code: str
    reason: str


Admission = Accepted | Suppressed | Refused


def activation_id_for(event_id: str) -> str:
    """Derived from the trigger, so replaying a log reproduces the same ids."""
    return "a-" + hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


@dataclass
class _Window:
    activation_id: str
    observed_at_ns: int


class Admitter:
    """Holds the recent accepted triggers; ``admit`` is deterministic given its inputs."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._windows: dict[tuple[str, TriggerKind, str], _Window] = {}
        self._seen_events: dict[str, tuple[str, int]] = {}

    def admit(self, event: TriggerEvent, now_ns: int) -> Admission:
        policy = self.policy
        rules = policy.rules(event.kind)
        if not rules.enabled:
            return Refused("kind_disabled", f"trigger kind {event.kind} is disabled by policy")
        if not event.source.authenticated and not policy.allows_unauthenticated(event.source.type):
            return Refused(
                "unauthenticated",
                f"unauthenticated {event.source.type} source {event.source.id!r} is not allowed",
            )
        age_ns = now_ns - event.observed_at_ns
        if age_ns > policy.max_trigger_age_s * NS:
            return Refused(
                "stale",
                f"observed {age_ns / NS:.1f} s ago, older than {policy.max_trigger_age_s:g} s",
            )
        if -age_ns > policy.max_clock_skew_s * NS:
            return Refused(
                "future",
                f"observed {-age_ns / NS:.1f} s in the future (clock skew allowance "
                f"{policy.max_clock_skew_s:g} s)",
            )
        seen = self._seen_events.get(event.event_id)
        if seen is not None:
            return Suppressed(seen[0], "duplicate delivery of the same trigger event")

        key = (event.unit_id, event.kind, event.source.id)
        window = self._windows.get(key)
        cooldown_ns = int(rules.cooldown_s * NS)
        if window is not None and abs(event.observed_at_ns - window.observed_at_ns) < cooldown_ns:
            self._seen_events[event.event_id] = (window.activation_id, event.observed_at_ns)
            gap_s = (event.observed_at_ns - window.observed_at_ns) / NS
            return Suppressed(
                window.activation_id,
                f"{gap_s:+.3f} s from activation {window.activation_id}, "
                f"inside the {rules.cooldown_s:g} s cooldown",
            )
        activation_id = activation_id_for(event.event_id)
        self.remember(event, activation_id)
        self._prune(now_ns)
        return Accepted(activation_id, rules)

    def remember(self, event: TriggerEvent, activation_id: str) -> None:
        """Record an accepted trigger (also used to rebuild state from the log)."""
        key = (event.unit_id, event.kind, event.source.id)
        current = self._windows.get(key)
        if current is None or event.observed_at_ns >= current.observed_at_ns:
            self._windows[key] = _Window(activation_id, event.observed_at_ns)
        self._seen_events[event.event_id] = (activation_id, event.observed_at_ns)

    def forget(self, activation_id: str) -> None:
        """A cancelled activation no longer holds its cooldown: a real trigger right after
        a false one starts cameras. (Its own event stays known, so a repeat is merged.)"""
        for key in [k for k, w in self._windows.items() if w.activation_id == activation_id]:
            del self._windows[key]

    def _prune(self, now_ns: int) -> None:
        # Nothing older than the trigger-age limit can be admitted, so nothing older than
        # that plus the longest cooldown can matter.
        horizon = now_ns - int(
            (self.policy.max_trigger_age_s + self.policy.longest_cooldown_s) * NS
        )
        if len(self._seen_events) > 4096:
            self._seen_events = {k: v for k, v in self._seen_events.items() if v[1] >= horizon}
        if len(self._windows) > 4096:
            self._windows = {k: v for k, v in self._windows.items() if v.observed_at_ns >= horizon}
