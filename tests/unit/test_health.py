"""The health decision (pure): the gateway's state in, a status and its reasons out."""

from __future__ import annotations

import dataclasses

import pytest

from mesh.ops.health import GatewayState, Limits, Status, console_health, gateway_health

FINE = GatewayState(log_error=None, link_up=True, outbox_depth=0, loop_lag_s=0.001)


def test_all_fine_is_ok_with_no_reasons() -> None:
    health = gateway_health(FINE)
    assert (health.status, health.reasons, health.http_status) == (Status.OK, (), 200)
    assert health.as_json()["checks"] == {
        "log_error": None,
        "link_up": True,
        "link_never_up": False,
        "outbox_depth": 0,
        "outbox_oldest_age_s": None,
        "loop_lag_s": 0.001,
        "outbox_fallback_error": None,
    }


def test_a_log_that_cannot_be_written_is_unhealthy_whatever_else() -> None:
    state = GatewayState(log_error="disk I/O error", link_up=False, outbox_depth=500)
    health = gateway_health(state)
    assert health.status is Status.UNHEALTHY
    assert health.http_status == 503
    assert health.reasons[0] == "activation log cannot be written: disk I/O error"
    assert len(health.reasons) == 3  # every problem is named, not just the worst


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"link_up": False}, "broker link is down"),
        (
            {"link_up": False, "link_never_up": True},
            "broker link is down (never connected since start)",
        ),
        ({"outbox_depth": 100}, "outbox holds 100 undelivered messages"),
        ({"outbox_oldest_age_s": 61.0}, "oldest undelivered outbox message is 61 s old"),
        ({"loop_lag_s": 0.3}, "event loop lags by 300 ms"),
    ],
)
def test_handicaps_are_degraded_and_still_200(change: dict[str, object], reason: str) -> None:
    state = dataclasses.replace(FINE, **change)
    health = gateway_health(state)
    assert (health.status, health.reasons, health.http_status) == (
        Status.DEGRADED,
        (reason,),
        200,
    )


def test_limits_are_inclusive_and_configurable() -> None:
    just_under = GatewayState(None, True, outbox_depth=99, outbox_oldest_age_s=59.9)
    assert gateway_health(just_under).status is Status.OK
    strict = Limits(outbox_depth=10, outbox_age_s=5.0)
    health = gateway_health(just_under, strict)
    assert health.status is Status.DEGRADED
    assert len(health.reasons) == 2


def test_a_stalled_loop_is_unhealthy() -> None:
    health = gateway_health(GatewayState(None, True, loop_lag_s=6.0))
    assert (health.status, health.reasons) == (Status.UNHEALTHY, ("event loop stalled for 6.0 s",))


def test_the_console_needs_its_broker() -> None:
    assert console_health(link_up=True, pages=2).status is Status.OK
    down = console_health(link_up=False, pages=2)
    assert (down.status, down.http_status, down.reasons) == (
        Status.UNHEALTHY,
        503,
        ("broker link is down",),
    )
