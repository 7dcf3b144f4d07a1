"""What a camera remembers of the commands it hears (docs/protocol.md, "What a camera
remembers"): claims only for what it acted on; signatures of every checked command,
ignored ones included; an exact repeat never started twice. Through CameraAgent itself,
with a fake link and clock (no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import SimulatedRecorder
from mesh.camera.recording.base import StopReason
from mesh.clock import NS
from mesh.protocol.codec import PayloadError, encode
from mesh.protocol.jws import Jws, b64url
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraRole,
    CancelAck,
    CancelOutcome,
    GeoPoint,
    RecordCancel,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key

T0 = 1_790_000_000 * NS
ORIGIN = GeoPoint(lat=39.952583, lon=-75.165222)
FAR = GeoPoint(lat=39.97, lon=-75.165222)  # ~1.9 km north
GW = Ed25519PrivateKey.generate()
CAM = Ed25519PrivateKey.generate()
OTHER_GW = Ed25519PrivateKey.generate()  # a genuine gateway key of another car
TRUST = TrustStore(
    [
        trusted_key(GW.public_key(), KeyRole.GATEWAY, "gw-car-12"),
        trusted_key(OTHER_GW.public_key(), KeyRole.GATEWAY, "gw-car-7"),
        trusted_key(CAM.public_key(), KeyRole.CAMERA, "bwc-7a"),
    ]
)


@dataclass
class Clock:
    now: int = T0

    def wall_ns(self) -> int:
        return self.now

    def mono_ns(self) -> int:
        return self.now


@dataclass
class FakeLink:
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        self.sent.append((topic, payload))

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        self.sent.append((topic, payload))


@pytest.fixture
def camera() -> Iterator[CameraAgent]:
    clock = Clock()
    agent = CameraAgent(
        CameraIdentity("bwc-7a", "car-7", CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=Topics("t/mesh/v2"),
        position=FAR,
        clock=clock,
        recorder=SimulatedRecorder(powered_on_ns=T0 - 600 * NS),
        security=Security(signer=PayloadSigner(CAM), trust=TRUST),
    )
    agent.link = FakeLink()  # type: ignore[assignment]
    yield agent
    if agent._presence_task is not None:
        agent._presence_task.cancel()


def command(attempt: int = 0, *, units: tuple[str, ...] = (), ttl_s: int = 30) -> bytes:
    """The command as the gateway sends it: signed (a JWS of its bytes)."""
    return PayloadSigner(GW).seal(unsigned_command(attempt, units=units, ttl_s=ttl_s)).to_bytes()


def unsigned_command(
    attempt: int = 0, *, units: tuple[str, ...] = (), ttl_s: int = 30
) -> RecordStart:
    return RecordStart(
        activation_id="a-1",
        issuer="gw-car-12",
        trigger=TriggerSummary(
            event_id="e-1",
            kind=TriggerKind.WEAPON_DRAW,
            unit_id="car-12",
            observed_at_ns=T0,
            source=SourceRef(type=SourceType.MANUAL, id="t", authenticated=False),
        ),
        issued_at_ns=T0,
        origin=ORIGIN,
        radius_m=150.0,
        pre_event_s=30,
        targets=Targets(units=units),
        expires_at_ns=T0 + ttl_s * NS,
        attempt=attempt,
        cancel_until_ns=T0 + 10 * NS,
    )


async def answer(agent: CameraAgent, message: bytes, *, direct: bool = True) -> CameraAck | None:
    """What the camera answers to a command message (verified, then parsed, then decided)."""
    received = agent.security.open(RecordStart, message)
    return await agent.handle(received, direct=direct, received_ns=agent.clock.wall_ns())


def expires_at(message: bytes) -> int:
    return Security().open(RecordStart, message).model.expires_at_ns


def status(ack: CameraAck | None) -> tuple[AckStatus, str] | None:
    return None if ack is None else (ack.status, ack.reason.split(":")[0])


async def test_an_exact_repeat_never_starts_a_recording_twice(camera: CameraAgent) -> None:
    """Before: with a claim whose recording had ended, the same signed command sent again
    to the camera's own topic started a new recording (the replay guard was asked only
    when the issuer held no claim)."""
    camera.position = ORIGIN  # a new fix
    first = command()
    assert status(await answer(camera, first)) == (AckStatus.STARTED, "in range")
    assert status(await answer(camera, first)) == (
        AckStatus.ALREADY_RECORDING,
        "duplicate command for this activation",
    )
    # The recording ended (stopped on the camera).
    camera.simulated.stop_now(StopReason.OFFICER, camera.clock.wall_ns(), note="done")
    assert status(await answer(camera, first, direct=False)) is None
    assert status(await answer(camera, first)) == (AckStatus.REJECTED, "replayed")
    assert not camera.recorder.is_recording(camera.clock.wall_ns())
    assert camera.simulated.recordings == 1
    # The gateway's genuine retry is signed afresh (a new attempt): decided afresh.
    assert status(await answer(camera, command(attempt=1))) == (AckStatus.STARTED, "in range")
    assert camera.simulated.recordings == 2


async def test_a_rejected_or_out_of_range_command_makes_no_claim(camera: CameraAgent) -> None:
    """Only `started` and `already_recording` make a claim: the issuer's next command for
    the same id (a new signature) is decided afresh, not taken for a duplicate."""
    assert status(await answer(camera, command())) == (AckStatus.OUT_OF_RANGE, "out of range")
    unsigned = encode(unsigned_command(attempt=1))
    assert status(await answer(camera, unsigned)) == (AckStatus.REJECTED, "unsigned")
    camera.position = ORIGIN  # a new fix
    assert status(await answer(camera, command(attempt=2), direct=False)) == (
        AckStatus.STARTED,
        "in range",
    )


async def test_a_refused_command_is_not_remembered_an_ignored_one_is(camera: CameraAgent) -> None:
    """The signature of a command that passed the checks is kept until it expires, even
    if the camera ignored it; one that failed them is not (it is refused each time). One
    whose signature does not verify is not even parsed: dropped, unanswered."""
    genuine = PayloadSigner(GW).seal(unsigned_command())
    forged = unsigned_command().model_copy(update={"radius_m": 5000.0})
    tampered = Jws(genuine.protected, b64url(encode(forged)), genuine.signature, genuine.kid)
    for _ in range(2):
        with pytest.raises(PayloadError) as refused:
            await answer(camera, tampered.to_bytes())
        assert refused.value.code == "bad_signature"
    wrong = PayloadSigner(OTHER_GW).seal(unsigned_command()).to_bytes()
    assert status(await answer(camera, wrong)) == (AckStatus.REJECTED, "wrong_signer")
    assert status(await answer(camera, wrong)) == (AckStatus.REJECTED, "wrong_signer")
    heard = command(attempt=1)
    assert await answer(camera, heard, direct=False) is None  # out of range on its cell: ignored
    camera.position = ORIGIN  # a new fix
    assert await answer(camera, heard, direct=False) is None  # now in range: still a repeat
    assert status(await answer(camera, heard)) == (AckStatus.REJECTED, "replayed")
    assert camera.simulated.recordings == 0
    camera.clock.now = expires_at(heard) + NS  # type: ignore[attr-defined]
    assert status(await answer(camera, heard)) == (
        AckStatus.REJECTED,
        "command expired 1000 ms ago",
    )


async def test_a_cancel_is_answered_once_with_a_cancel_ack(camera: CameraAgent) -> None:
    camera.position = ORIGIN  # a new fix
    assert status(await answer(camera, command())) == (AckStatus.STARTED, "in range")
    link = camera.link
    assert isinstance(link, FakeLink)
    before = len(link.sent)
    cancel = Security(trust=TRUST).open(
        RecordCancel,
        PayloadSigner(GW)
        .seal(RecordCancel(activation_id="a-1", issuer="gw-car-12", at_ns=T0 + NS))
        .to_bytes(),
    )
    assert await camera.cancel(cancel, received_ns=T0 + NS)
    assert await camera.cancel(cancel, received_ns=T0 + NS) is False  # again, on another topic
    answers = link.sent[before:]
    assert [topic for topic, _ in answers] == ["t/mesh/v2/ack/gw-car-12/bwc-7a"]
    answered = Security(trust=TRUST).open(CancelAck, answers[0][1])
    ack = answered.model
    assert (ack.outcome, ack.cancel_issuer, ack.cancel_at_ns) == (
        CancelOutcome.STOPPED,
        "gw-car-12",
        T0 + NS,
    )
    assert answered.key is not None  # signed, and verified
    assert answered.key.subject == "bwc-7a"
    # A cancel for an activation it never acted on: silence.
    other = RecordCancel(activation_id="a-2", issuer="gw-car-12", at_ns=T0 + NS)
    assert await camera.cancel(other) is False
    assert len(link.sent) == before + 1
