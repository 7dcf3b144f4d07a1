"""Policy rules and admission: cooldowns, duplicates, stale and unauthenticated triggers."""

from __future__ import annotations

import pytest

from mesh.clock import NS
from mesh.decide.admission import Accepted, Admitter, Refused, Suppressed, activation_id_for
from mesh.decide.policy import KindOverride, KindRules, Policy
from mesh.protocol.models import SourceRef, SourceType, TriggerEvent, TriggerKind

T0 = 1_790_000_000 * NS


def ev(
    event_id: str,
    at_s: float,
    kind: TriggerKind = TriggerKind.WEAPON_DRAW,
    source: str = "holster-1",
    src_type: SourceType = SourceType.MANUAL,
    authenticated: bool = False,
) -> TriggerEvent:
    return TriggerEvent(
        event_id=event_id,
        kind=kind,
        unit_id="car-12",
        observed_at_ns=T0 + int(at_s * NS),
        source=SourceRef(type=src_type, id=source, authenticated=authenticated),
    )


def test_builtin_rules_and_overrides_merge() -> None:
    policy = Policy.model_validate({"kinds": {"weapon_draw": {"radius_m": 75}}})
    draw = policy.rules(TriggerKind.WEAPON_DRAW)
    assert draw.radius_m == 75
    assert draw.pre_event_s == 60  # kept from the built-in weapon_draw rules
    assert policy.rules(TriggerKind.EMERGENCY_LIGHTS).radius_m == 300  # other kinds untouched
    assert policy.rules(TriggerKind.SPEED).radius_m == 0


def test_policy_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="pre_event_s"):
        Policy.model_validate({"kinds": {"taser_arm": {"pre_event_s": 500}}})
    with pytest.raises(ValueError, match="radiu_m"):
        Policy.model_validate({"kinds": {"taser_arm": {"radiu_m": 5}}})


def test_retry_waits_double_and_are_capped() -> None:
    rules = KindRules(ack_deadline_ms=100)
    assert [rules.retry_wait_ms(a) for a in range(6)] == [100, 200, 400, 800, 800, 800]


def test_first_trigger_is_accepted_with_a_derived_id() -> None:
    admitter = Admitter(Policy())
    result = admitter.admit(ev("e1", 0), T0)
    assert isinstance(result, Accepted)
    assert result.activation_id == activation_id_for("e1")
    assert result.rules.radius_m == 150


def test_burst_within_cooldown_collapses_to_one_activation() -> None:
    admitter = Admitter(Policy())
    first = admitter.admit(ev("e1", 0), T0)
    assert isinstance(first, Accepted)
    for i in range(1, 50):
        again = admitter.admit(ev(f"e{i + 1}", i * 0.02), T0 + i * NS // 50)
        assert isinstance(again, Suppressed)
        assert again.activation_id == first.activation_id
        assert "cooldown" in again.reason


def test_cooldown_is_measured_from_the_accepted_trigger() -> None:
    admitter = Admitter(Policy())  # weapon_draw cooldown: 10 s
    assert isinstance(admitter.admit(ev("e1", 0), T0), Accepted)
    assert isinstance(admitter.admit(ev("e2", 9.9), T0 + 10 * NS), Suppressed)
    assert isinstance(admitter.admit(ev("e3", 10.0), T0 + 10 * NS), Accepted)


def test_other_sources_and_kinds_have_their_own_windows() -> None:
    admitter = Admitter(Policy())
    assert isinstance(admitter.admit(ev("e1", 0), T0), Accepted)
    assert isinstance(admitter.admit(ev("e2", 0.1, source="holster-2"), T0), Accepted)
    assert isinstance(admitter.admit(ev("e3", 0.1, kind=TriggerKind.TASER_ARM), T0), Accepted)


def test_redelivered_event_is_a_duplicate_even_after_the_cooldown() -> None:
    admitter = Admitter(Policy.model_validate({"kinds": {"weapon_draw": {"cooldown_s": 0}}}))
    first = admitter.admit(ev("e1", 0), T0)
    again = admitter.admit(ev("e1", 0), T0 + NS)
    assert isinstance(first, Accepted)
    assert isinstance(again, Suppressed)
    assert "duplicate delivery" in again.reason


@pytest.mark.parametrize(
    ("trigger", "code"),
    [
        (ev("old", -31), "stale"),
        (ev("future", 6), "future"),
        (ev("ble", 0, src_type=SourceType.BLE, authenticated=False), "unauthenticated"),
    ],
)
def test_refusals_name_their_reason(trigger: TriggerEvent, code: str) -> None:
    result = Admitter(Policy()).admit(trigger, T0)
    assert isinstance(result, Refused)
    assert result.code == code


def test_disabled_kind_is_refused_and_authenticated_ble_is_accepted() -> None:
    policy = Policy(kinds={TriggerKind.SIREN: KindOverride(enabled=False)})
    assert isinstance(Admitter(policy).admit(ev("s", 0, kind=TriggerKind.SIREN), T0), Refused)
    ble = ev("b", 0, src_type=SourceType.BLE, authenticated=True)
    assert isinstance(Admitter(policy).admit(ble, T0), Accepted)


def test_remembered_activations_keep_their_window_after_a_restart() -> None:
    admitter = Admitter(Policy())
    admitter.remember(ev("e1", 0), "a-from-log")
    result = admitter.admit(ev("e2", 1), T0 + NS)
    assert isinstance(result, Suppressed)
    assert result.activation_id == "a-from-log"
