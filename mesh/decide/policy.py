"""The agency's activation policy: per trigger kind, how far, how long, how often.

Pure code: nothing here reads a clock or does I/O, so replaying a log through it gives
the same decisions.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.protocol.models import CameraRole, Ident, Priority, SourceType, TriggerKind

# Who hears about a camera that did not start: "dispatch", "own_unit" (the activation's
# unit), or any other audience name (a topic level: supervisors, k9-desk …).
Audience = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KindRules(_Strict):
    """Everything the mesh needs to turn one kind of trigger into an activation."""

    enabled: bool = True
    radius_m: Annotated[float, Field(ge=0, le=50_000)] = 150.0
    pre_event_s: Annotated[int, Field(ge=0, le=120)] = 30
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    ack_deadline_ms: Annotated[int, Field(ge=10, le=60_000)] = 1000
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    command_ttl_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    include_own_unit: bool = True
    # Only cameras of these roles / in these groups (empty: any).
    roles: tuple[CameraRole, ...] = ()
    groups: tuple[Ident, ...] = ()
    priority: Priority = 3
    # An officer may cancel a false trigger this long after it (0: never); logged, and
    # cameras stop a recording it alone started, keeping what they recorded.
    cancel_window_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    wake_sleeping: bool = True
    escalate_to: tuple[Audience, ...] = ("dispatch",)
    # A camera's recording for this kind that ends sooner than this after it started (for
    # any reason but a cancel) is flagged by `audit report`; null: no minimum.
    min_recording_s: Annotated[float, Field(gt=0, le=86_400)] | None = None

    def retry_wait_ms(self, attempt: int) -> int:
        """How long to wait for acks after attempt ``attempt`` (0 = the broadcast):
        the deadline, then doubling, capped at 8x."""
        return self.ack_deadline_ms * min(1 << min(attempt, 3), 8)


class KindOverride(_Strict):
    """Per-kind changes to the defaults; unset fields inherit."""

    enabled: bool | None = None
    radius_m: Annotated[float, Field(ge=0, le=50_000)] | None = None
    pre_event_s: Annotated[int, Field(ge=0, le=120)] | None = None
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    ack_deadline_ms: Annotated[int, Field(ge=10, le=60_000)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] | None = None
    command_ttl_s: Annotated[float, Field(gt=0, le=600)] | None = None
    include_own_unit: bool | None = None
    roles: tuple[CameraRole, ...] | None = None
    groups: tuple[Ident, ...] | None = None
    priority: Priority | None = None
    cancel_window_s: Annotated[float, Field(ge=0, le=300)] | None = None
    wake_sleeping: bool | None = None
    escalate_to: tuple[Audience, ...] | None = None
    min_recording_s: Annotated[float, Field(gt=0, le=86_400)] | None = None


# Shipped defaults. Radii are a judgement: weapon and TASER events matter to officers
# on foot nearby; lights, siren and crash to everyone arriving at the scene. Speed and
# doors and gear shifts concern the unit's own cameras only (radius 0).
# Priority 1 is a threat to life, 2 a pursuit or a call for help, 3 routine. A dispatcher's
# activation is not the officer's to cancel: its window is 0.
BUILTIN_KINDS: dict[TriggerKind, KindOverride] = {
    TriggerKind.WEAPON_DRAW: KindOverride(radius_m=150, pre_event_s=60, cooldown_s=10, priority=1),
    TriggerKind.TASER_ARM: KindOverride(radius_m=150, pre_event_s=60, cooldown_s=10, priority=1),
    TriggerKind.EMERGENCY_LIGHTS: KindOverride(
        radius_m=300, pre_event_s=30, cooldown_s=30, priority=2
    ),
    TriggerKind.SIREN: KindOverride(radius_m=300, pre_event_s=30, cooldown_s=30, priority=2),
    TriggerKind.SPEED: KindOverride(radius_m=0, pre_event_s=30, cooldown_s=60, priority=3),
    TriggerKind.CRASH: KindOverride(radius_m=500, pre_event_s=120, cooldown_s=30, priority=1),
    TriggerKind.DOOR: KindOverride(radius_m=0, pre_event_s=30, cooldown_s=30, priority=3),
    TriggerKind.GUN_RACK: KindOverride(radius_m=50, pre_event_s=60, cooldown_s=10, priority=2),
    TriggerKind.GEAR: KindOverride(radius_m=0, pre_event_s=30, cooldown_s=30, priority=3),
    TriggerKind.MAN_DOWN: KindOverride(radius_m=300, pre_event_s=60, cooldown_s=30, priority=1),
    TriggerKind.MANUAL: KindOverride(radius_m=100, pre_event_s=30, cooldown_s=2, priority=2),
    TriggerKind.DISPATCH: KindOverride(
        radius_m=300, pre_event_s=30, cooldown_s=2, priority=2, cancel_window_s=0
    ),
}

DEFAULT_UNAUTHENTICATED: dict[SourceType, bool] = {
    # Manual and dispatch triggers arrive over the broker, whose access control vouches
    # for them; CAN frames come from the vehicle's own wired bus. A BLE advert without a
    # valid MAC can be forged by anyone nearby, so it is refused unless allowed here.
    SourceType.MANUAL: True,
    SourceType.DISPATCH: True,
    SourceType.CAN: True,
    SourceType.BLE: False,
}


class Policy(_Strict):
    defaults: KindRules = KindRules()
    kinds: dict[TriggerKind, KindOverride] = Field(default_factory=lambda: dict(BUILTIN_KINDS))
    # Triggers observed longer ago than this are refused (a stale event must not start
    # cameras now); observed further in the future than the skew allowance likewise.
    max_trigger_age_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_clock_skew_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    # A camera offline for longer than this is not expected to answer (logged, not waited for).
    offline_grace_s: Annotated[float, Field(ge=0)] = 120.0
    # A position fix older than this is stale: the camera is placed with its unit instead.
    max_fix_age_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    allow_unauthenticated: dict[SourceType, bool] = Field(
        default_factory=lambda: dict(DEFAULT_UNAUTHENTICATED)
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_builtin_kinds(cls, data: Any) -> Any:
        # A config that lists one kind keeps the shipped rules for all the others.
        # Within a kind, the config's fields are laid over the shipped ones field by field.
        if isinstance(data, dict) and isinstance(data.get("kinds"), dict):
            merged: dict[Any, Any] = {
                str(k): v.model_dump(exclude_none=True) for k, v in BUILTIN_KINDS.items()
            }
            for kind, override in data["kinds"].items():
                base = merged.get(str(kind), {})
                if isinstance(override, dict):
                    merged[str(kind)] = {**base, **override}
                elif isinstance(override, KindOverride):
                    merged[str(kind)] = {**base, **override.model_dump(exclude_none=True)}
                else:
                    merged[str(kind)] = override  # let validation say what is wrong with it
            data = {**data, "kinds": merged}
        return data

    @cached_property
    def _rules_by_kind(self) -> dict[TriggerKind, KindRules]:
        # The policy is immutable, so the merged rules are computed once, not per trigger.
        table = {}
        for kind in TriggerKind:
            override = self.kinds.get(kind)
            changes = override.model_dump(exclude_none=True) if override is not None else {}
            table[kind] = self.defaults.model_copy(update=changes) if changes else self.defaults
        return table

    def rules(self, kind: TriggerKind) -> KindRules:
        return self._rules_by_kind[kind]

    def unused_defaults(self) -> tuple[str, ...]:
        """The fields given under `defaults` that change no kind: every kind sets its own
        (in `kinds`, or built in, as every kind's radius, pre-event, cooldown and priority).
        A kind's own value wins over `defaults` (docs/policy.md), so these are mistakes."""
        given = self.defaults.model_fields_set
        return tuple(
            sorted(
                name
                for name in given
                if all(
                    (o := self.kinds.get(kind)) is not None and getattr(o, name) is not None
                    for kind in TriggerKind
                )
            )
        )

    def allows_unauthenticated(self, source: SourceType) -> bool:
        return self.allow_unauthenticated.get(source, False)

    @cached_property
    def longest_cooldown_s(self) -> float:
        return max(rules.cooldown_s for rules in self._rules_by_kind.values())
