"""Deterministic replay: re-decide every logged trigger with the pure policy and range code.

The log holds every input a decision took: each trigger with the time it was received,
every presence as the gateway held it when it changed or when a decision read it
(each run starts with no cameras), the car's position and what
its radio heard (``DecisionInputs``), the policy the gateway started with, and accepted
cancels (which release a cooldown). Replaying them through ``Admitter`` and
``plan_activation`` gives the same decisions; with another policy, the differences are
what that policy would have changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from mesh.clock import NS
from mesh.decide.admission import Accepted, Admitter, Refused, Suppressed
from mesh.decide.planning import plan_activation
from mesh.decide.policy import Policy
from mesh.decide.presence import PresenceRegistry
from mesh.decide.targeting import TargetDecision
from mesh.journal.records import (
    ActivationEntry,
    CancelEntry,
    RecordKind,
    StartedEntry,
    TargetEntry,
    TriggerEntry,
)
from mesh.journal.store import LogRecord, reading
from mesh.protocol.models import CameraPresence, TriggerEvent


@dataclass(frozen=True)
class Difference:
    seq: int  # the logged record of the trigger
    event_id: str
    activation_id: str | None
    what: list[str]

    def __str__(self) -> str:
        head = f"record {self.seq}, trigger {self.event_id}"
        if self.activation_id:
            head += f" (activation {self.activation_id})"
        return head + ":\n" + "\n".join(f"    {line}" for line in self.what)


@dataclass
class ReplayResult:
    triggers: int = 0
    activations: int = 0
    presence_updates: int = 0
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences


@dataclass
class _Accepted:
    trigger: TriggerEvent
    activation_id: str
    at_ns: int


class Replayer:
    """Feed it the log's records in order; ``result`` says what would differ."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.override = policy
        self.policy = policy or Policy()
        self.admitter = Admitter(self.policy)
        self.presence = PresenceRegistry()
        self.issuer = ""
        self.unit = ""
        self.accepted: list[_Accepted] = []
        self.result = ReplayResult()
        self._started = False
        self._last_seq = 0

    def run(self, records: Iterable[LogRecord]) -> ReplayResult:
        for record in records:
            self.feed(record)
        return self.result

    def feed(self, record: LogRecord) -> None:
        if record.seq != self._last_seq + 1 and self._last_seq:
            self.result.notes.append(
                f"records {self._last_seq + 1}-{record.seq - 1} are not in the log (retention): "
                "presence they held is missing until cameras announce themselves again"
            )
        self._last_seq = record.seq
        with reading(record):
            self._feed(record)

    def _feed(self, record: LogRecord) -> None:
        match record.kind:
            case RecordKind.STARTED:
                self._on_started(StartedEntry.model_validate_json(record.body), record.at_ns)
            case RecordKind.PRESENCE:
                self._on_presence(record.body)
            case RecordKind.ACTIVATION:
                entry = ActivationEntry.model_validate_json(record.body)
                self._on_trigger(record, entry.trigger, entry.received_at_ns, entry)
            case RecordKind.SUPPRESSED | RecordKind.REFUSED:
                logged = TriggerEntry.model_validate_json(record.body)
                self._on_trigger(record, logged.trigger, logged.received_at_ns, logged)
            case RecordKind.CANCEL:
                cancel = CancelEntry.model_validate_json(record.body)
                if cancel.accepted:
                    self.admitter.forget(cancel.cancel.activation_id)

    # --- inputs ---------------------------------------------------------------------------
    def _on_started(self, started: StartedEntry, at_ns: int) -> None:
        self.issuer, self.unit = started.gateway_id, started.unit_id
        # A gateway starts with no cameras and logs each one it decides on
        # (mesh/decide/presence.py).
        self.presence = PresenceRegistry()
        if self.override is None:
            self.policy = started.policy
        if not self._started:
            self._started = True
            self.admitter = Admitter(self.policy)
            return
        # A restart: the gateway rebuilt its cooldown windows from recent activations
        # (Coordinator.rebuild_admission); so does the replay, from its own.
        horizon = at_ns - int((self.policy.max_trigger_age_s + self.policy.longest_cooldown_s) * NS)
        self.admitter = Admitter(self.policy)
        for done in self.accepted:
            if done.at_ns >= horizon:
                self.admitter.remember(done.trigger, done.activation_id)

    def _on_presence(self, body: str) -> None:
        self.result.presence_updates += 1
        data = json.loads(body)
        if data.get("removed"):
            self.presence.remove(str(data["camera_id"]))
        else:
            self.presence.update(CameraPresence.model_validate_json(body))

    # --- decisions ------------------------------------------------------------------------
    def _on_trigger(
        self,
        record: LogRecord,
        trigger: TriggerEvent,
        now: int,
        logged: ActivationEntry | TriggerEntry,
    ) -> None:
        self.result.triggers += 1
        admission = self.admitter.admit(trigger, now)
        what: list[str] = []
        logged_outcome = _logged_outcome(record.kind, logged)
        replay_outcome = _outcome(admission)
        if logged_outcome != replay_outcome:
            what.append(f"outcome: logged {logged_outcome}, replay {replay_outcome}")
        if isinstance(admission, Accepted):
            self.result.activations += 1
            self.accepted.append(_Accepted(trigger, admission.activation_id, record.at_ns))
            if isinstance(logged, ActivationEntry):
                what += self._compare_plan(trigger, admission, now, logged)
        elif isinstance(logged, ActivationEntry):
            expected = [t.camera_id for t in logged.targets if t.expected]
            what.append(
                f"the logged activation commanded {len(expected)} camera(s): {_ids(expected)}"
            )
        if what:
            activation = (
                logged.command.activation_id if isinstance(logged, ActivationEntry) else None
            )
            self.result.differences.append(
                Difference(record.seq, trigger.event_id, activation, what)
            )

    def _compare_plan(
        self, trigger: TriggerEvent, admission: Accepted, now: int, logged: ActivationEntry
    ) -> list[str]:
        inputs = logged.inputs
        if inputs is None:
            return ["the log has no decision inputs for this activation (written before replay)"]
        plan = plan_activation(
            trigger,
            activation_id=admission.activation_id,
            rules=admission.rules,
            issuer=self.issuer or logged.command.issuer,
            gateway_position=inputs.gateway_position,
            cameras=self.presence,
            now_ns=now,
            offline_grace_s=self.policy.offline_grace_s,
            max_fix_age_s=self.policy.max_fix_age_s,
            own_unit=self.unit or None,
            heard=inputs.heard_map() or None,
        )
        what = _command_differences(logged, plan.command.model_dump(mode="json"))
        return what + _target_differences(logged.targets, plan.decisions)


def _outcome(admission: Accepted | Suppressed | Refused) -> str:
    match admission:
        case Accepted():
            return f"activation {admission.activation_id}"
        case Suppressed():
            return f"merged into {admission.activation_id}"
        case Refused():
            return f"refused ({admission.code})"
    return "?"


def _logged_outcome(kind: str, logged: ActivationEntry | TriggerEntry) -> str:
    if isinstance(logged, ActivationEntry):
        return f"activation {logged.command.activation_id}"
    if kind == RecordKind.SUPPRESSED:
        return f"merged into {logged.activation_id}"
    return f"refused ({logged.code})"


def _command_differences(logged: ActivationEntry, replayed: dict[str, object]) -> list[str]:
    original = logged.command.model_dump(mode="json")
    # A command logged before cancel deadlines existed has none; that is not a decision.
    skip = {"cancel_until_ns"} if original.get("cancel_until_ns") is None else set()
    return [
        f"command {key}: logged {original.get(key)!r}, replay {replayed.get(key)!r}"
        for key in sorted((set(original) | set(replayed)) - skip)
        if original.get(key) != replayed.get(key)
    ]


def _target_differences(
    logged: Iterable[TargetEntry], replayed: Iterable[TargetDecision]
) -> list[str]:
    """Cameras looked at are compared by id (index order is not part of the decision);
    a camera only one side looked at matters only if that side expected it."""
    before = {t.camera_id: t for t in logged}
    after = {d.camera_id: TargetEntry.of(d) for d in replayed}
    lines: list[str] = []
    for camera in sorted(set(before) | set(after)):
        old, new = before.get(camera), after.get(camera)
        if old is not None and new is not None:
            if (old.expected, old.reason) != (new.expected, new.reason):
                lines.append(f"camera {camera}: logged {_target(old)}; replay {_target(new)}")
        elif old is not None and old.expected:
            lines.append(f"camera {camera}: logged {_target(old)}; replay did not consider it")
        elif new is not None and new.expected:
            lines.append(f"camera {camera}: not considered in the log; replay {_target(new)}")
    return lines


def _target(entry: TargetEntry) -> str:
    return f"{'expected' if entry.expected else 'not expected'} ({entry.reason})"


def _ids(ids: list[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
