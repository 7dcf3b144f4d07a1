"""The pure parts of `conformance camera`: the commands it builds (probes.py, scene.py)
and its verdicts on what a camera answered (judge.py)."""

from __future__ import annotations

import json

import pytest

from bridge.topics import Topics
from mesh.conformance.camera import judge, probes
from mesh.conformance.camera.judge import Answer
from mesh.conformance.camera.scene import Scene
from mesh.conformance.verdict import Outcome
from mesh.decide.camera import CameraView, scope
from mesh.decide.cells import cell_of
from mesh.protocol.codec import encode
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraPresence,
    CameraRole,
    CancelAck,
    CancelOutcome,
    GeoPoint,
    Position,
)

HERE = GeoPoint(lat=39.952583, lon=-75.165222)
SCENE = Scene(Topics("t/mesh/v2"), "cam-1", "car-1", HERE, "gw-a", "gw-b", "abcd1234")
NOW = 1_796_000_000_000_000_000


def me(position: GeoPoint | None = HERE) -> CameraView:
    return CameraView("cam-1", "car-1", position, CameraRole.BODY)


def ack(status: AckStatus, reason: str = "", **kw: object) -> Answer:
    model = CameraAck(
        activation_id=SCENE.activation("x"),
        camera_id="cam-1",
        unit_id="car-1",
        status=status,
        reason=reason,
        received_at_ns=NOW,
        **kw,  # type: ignore[arg-type]
    )
    return Answer("t/mesh/v2/ack/gw-a/cam-1", "gw-a", 200, 1.0, ack=model)


# --- the scene and the commands ----------------------------------------------------------
def test_near_concerns_the_camera_and_far_does_not_by_the_reference_rules() -> None:
    near = probes.near(SCENE, "n", NOW)
    far = probes.far(SCENE, "f", NOW)
    assert scope(near, me())[0]
    assert not scope(far, me())[0]
    # 5 km, as the out_of_range check expects the camera to say.
    assert far.origin is not None
    assert SCENE.distance_m(far.origin) == pytest.approx(5000, abs=1)


def test_without_a_position_near_targets_the_unit() -> None:
    blind = Scene(Topics("t/mesh/v2"), "cam-1", "car-1", None, "gw-a", "gw-b", "abcd1234")
    near = probes.near(blind, "n", NOW)
    assert near.targets.units == ("car-1",)
    assert scope(near, me(None))[0]
    assert not scope(probes.far(blind, "f", NOW), me(None))[0]


def test_moved_is_in_another_cell_and_every_id_carries_the_run_tag() -> None:
    moved = SCENE.moved()
    assert moved is not None
    assert cell_of(moved.lat, moved.lon) != SCENE.cell
    assert probes.near(SCENE, "n", NOW).activation_id == "conf-abcd1234-n"


def test_an_expired_command_expired_before_now_and_a_retry_is_the_next_attempt() -> None:
    command = probes.expired(SCENE, "e", NOW)
    assert command.expires_at_ns < NOW
    assert command.issued_at_ns < command.expires_at_ns
    assert probes.retry(command).attempt == command.attempt + 1


def test_flipped_times_retypes_every_time_and_nothing_else() -> None:
    body = json.loads(encode(probes.near(SCENE, "t", NOW)))
    flipped = probes.flipped_times(body)
    assert isinstance(body["issued_at_ns"], str)  # v2: times are strings on the wire
    assert flipped["issued_at_ns"] == int(body["issued_at_ns"])
    assert flipped["trigger"]["observed_at_ns"] == int(body["trigger"]["observed_at_ns"])
    assert flipped["radius_m"] == body["radius_m"]
    assert probes.flipped_times(flipped) == body


def test_sized_and_oversized_find_the_boundary() -> None:
    def build(n: int) -> bytes:
        return b"{" + b"x" * n + b"}"

    assert len(probes.sized(build, 16_384)) == 16_384
    assert len(probes.oversized(build, 16_384)) == 16_385

    def coarse(n: int) -> bytes:  # grows 4 bytes at a time, as base64 does
        return b"y" * (4 * ((n + 2) // 3))

    assert 16_380 < len(probes.sized(coarse, 16_384)) <= 16_384
    assert 16_384 < len(probes.oversized(coarse, 16_384)) <= 16_388


# --- answers -----------------------------------------------------------------------------
def test_silence_passes_and_any_answer_fails() -> None:
    assert judge.unanswered([], "x").outcome is Outcome.PASS
    assert judge.unanswered([ack(AckStatus.REJECTED, "no")], "x").outcome is Outcome.FAIL


def test_a_refusal_needs_its_code_first() -> None:
    assert judge.refusal(ack(AckStatus.REJECTED, "unsigned: no"), "unsigned", "x", 1).outcome is (
        Outcome.PASS
    )
    assert judge.refusal(ack(AckStatus.REJECTED, "no: unsigned"), "unsigned", "x", 1).outcome is (
        Outcome.FAIL
    )
    assert judge.refusal(ack(AckStatus.STARTED, "unsigned: x"), "unsigned", "x", 1).outcome is (
        Outcome.FAIL
    )
    assert judge.refusal(None, "unsigned", "x", 1).outcome is Outcome.FAIL


def test_started_needs_the_recording_fields() -> None:
    bare = ack(AckStatus.STARTED, "in range")
    full = ack(AckStatus.STARTED, "in range", recording_started_at_ns=NOW, pre_event_kept_s=30.0)
    assert judge.started(bare, "x", 1).outcome is Outcome.FAIL
    assert judge.started(full, "x", 1).outcome is Outcome.PASS


def test_an_unverifiable_command_may_be_answered_only_where_the_version_does() -> None:
    refused = ack(AckStatus.REJECTED, "bad_signature: no")
    assert judge.unverifiable([], "bad_signature", "x", answer_allowed=False).outcome is (
        Outcome.PASS
    )
    assert judge.unverifiable([refused], "bad_signature", "x", answer_allowed=False).outcome is (
        Outcome.FAIL
    )
    assert judge.unverifiable([refused], "bad_signature", "x", answer_allowed=True).outcome is (
        Outcome.PASS
    )
    started = ack(AckStatus.STARTED, "ok", recording_started_at_ns=NOW, pre_event_kept_s=1.0)
    assert judge.unverifiable([started], "bad_signature", "x", answer_allowed=True).outcome is (
        Outcome.FAIL
    )


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("out of range: 5000 m > 100 m", Outcome.PASS),
        ("out of range: 5.0 km", Outcome.PASS),
        ("out of range: 4990 m", Outcome.PASS),
        ("out of range: 100 m", Outcome.FAIL),  # the radius, not the distance
        ("out of range", Outcome.FAIL),
    ],
)
def test_out_of_range_must_name_the_distance(reason: str, outcome: Outcome) -> None:
    assert judge.distance_named(ack(AckStatus.OUT_OF_RANGE, reason), 5000.0, "x").outcome is (
        outcome
    )


def test_expired_must_say_so() -> None:
    assert judge.expired(ack(AckStatus.REJECTED, "command expired 10 s ago"), "x", 1).outcome is (
        Outcome.PASS
    )
    assert judge.expired(ack(AckStatus.REJECTED, "refused"), "x", 1).outcome is Outcome.FAIL


def test_presence_rate_allows_six_at_once_and_two_a_second() -> None:
    assert judge.presence_rate([0.0] * 6).outcome is Outcome.PASS
    assert judge.presence_rate([0.0] * 7).outcome is Outcome.FAIL
    steady = [i * 0.5 for i in range(60)]  # 2 a second for 30 s
    assert judge.presence_rate(steady).outcome is Outcome.PASS
    fast = [i * 0.25 for i in range(60)]  # 4 a second
    assert judge.presence_rate(fast).outcome is Outcome.FAIL


def test_a_presence_must_be_small_and_name_its_camera() -> None:
    presence = CameraPresence(
        camera_id="cam-1",
        unit_id="car-1",
        role=CameraRole.BODY,
        online=True,
        recording=False,
        position=Position(lat=HERE.lat, lon=HERE.lon, fix_at_ns=NOW),
        last_seen_ns=NOW,
    )
    assert judge.presence_payload(encode(presence), "cam-1", "car-1")[0].outcome is Outcome.PASS
    assert judge.presence_payload(encode(presence), "cam-2", None)[0].outcome is Outcome.FAIL
    assert judge.presence_payload(encode(presence), "cam-1", "car-9")[0].outcome is Outcome.FAIL
    big = json.loads(encode(presence))
    big["padding"] = "x" * 2048
    assert judge.presence_payload(json.dumps(big).encode(), "cam-1", None)[0].outcome is (
        Outcome.FAIL
    )


def _sent(attempt: int = 0, issuer: str = "gw-a") -> probes.Sent:
    return probes.Sent("p", SCENE.activation("x"), issuer, attempt, "t", b"", 0.0)


def test_ack_format_catches_a_wrong_topic_attempt_or_fields() -> None:
    good = ack(AckStatus.OUT_OF_RANGE, "far")
    assert judge.ack_format([(_sent(), good)], "cam-1", "car-1").outcome is Outcome.PASS
    assert judge.ack_format([(_sent(attempt=2), good)], "cam-1", "car-1").outcome is Outcome.FAIL
    assert judge.ack_format([(_sent(issuer="gw-b"), good)], "cam-1", "car-1").outcome is (
        Outcome.FAIL
    )
    stray = ack(AckStatus.OUT_OF_RANGE, "far", recording_started_at_ns=NOW, pre_event_kept_s=1.0)
    assert judge.ack_format([(_sent(), stray)], "cam-1", "car-1").outcome is Outcome.FAIL
    silent_refusal = ack(AckStatus.REJECTED, "")
    assert judge.ack_format([(_sent(), silent_refusal)], "cam-1", "car-1").outcome is (Outcome.FAIL)


def test_cancel_ack_format_matches_the_cancel_it_answers() -> None:
    sent = probes.Sent("c", SCENE.activation("x"), "gw-b", 0, "t", b"", 0.0, cancel_at_ns=NOW)
    model = CancelAck(
        activation_id=SCENE.activation("x"),
        camera_id="cam-1",
        outcome=CancelOutcome.REFUSED,
        reason="not_issuer: not yours",
        cancel_issuer="gw-b",
        cancel_at_ns=NOW,
        received_at_ns=NOW,
    )
    answer = Answer("t/mesh/v2/ack/gw-a/cam-1", "gw-a", 300, 1.0, cancel_ack=model)
    assert judge.cancel_ack_format([(sent, answer)], "cam-1").outcome is Outcome.PASS
    wrong = model.model_copy(update={"cancel_at_ns": NOW + 1})
    bad = Answer("t", "gw-a", 300, 1.0, cancel_ack=wrong)
    assert judge.cancel_ack_format([(sent, bad)], "cam-1").outcome is Outcome.FAIL
    vague = model.model_copy(update={"reason": "refused"})
    assert judge.cancel_ack_format(
        [(sent, Answer("t", "gw-a", 3, 1.0, cancel_ack=vague))], "cam-1"
    ).outcome is (Outcome.FAIL)


def test_every_answer_of_a_signed_run_must_be_trusted() -> None:
    good = ack(AckStatus.OUT_OF_RANGE, "far")
    assert judge.signed([good]).outcome is Outcome.PASS
    forged = Answer("t", "gw-a", 10, 1.0, ack=good.ack, untrusted="unsigned: unsigned ack")
    assert judge.signed([good, forged]).outcome is Outcome.FAIL
