"""Issue 15, item 2: one gateway's key must not stop another gateway's recordings.

Over a real mosquitto, with two gateways' keys in the cameras' trust store: gw-car-12 (a
real gateway) starts the cameras for a weapon draw; gw-car-7's key (a stolen one: it signs
validly) cancels that activation on ``cmd/all``. Before the fix every camera stopped and
gw-car-12's log still said ``confirmed``. Now a camera obeys a cancel only from the
issuer of the command it records for and only before the deadline that command carried,
and answers every cancel of its recordings to that issuer, who logs the answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.audit.report import collect
from mesh.clock import NS
from mesh.decide.admission import activation_id_for
from mesh.decide.policy import Policy
from mesh.journal.records import ActivationEntry, CancelAckEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import (
    AckStatus,
    ActivationState,
    CancelOutcome,
    CancelRequest,
    OutcomeStatus,
    ReceiptOutcome,
    RecordCancel,
    RecordStart,
    Targets,
    TriggerEvent,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from mesh.sim.camera_fleet import CameraSpec
from tests.harness import DEFAULT_SPECS, UNIT, Mesh, event, make_gateway, running_mesh, wait_until

ISSUER = f"gw-{UNIT}"  # gw-car-12
OTHER = "gw-car-7"
WINDOW_S = 2.0
POLICY = Policy.model_validate({"kinds": {"weapon_draw": {"cancel_window_s": WINDOW_S}}})


@dataclass
class Keys:
    gateway: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    other_gateway: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    dispatch: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    cameras: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def store(self) -> TrustStore:
        entries = [
            trusted_key(self.gateway.public_key(), KeyRole.GATEWAY, ISSUER),
            trusted_key(self.other_gateway.public_key(), KeyRole.GATEWAY, OTHER),
            trusted_key(self.dispatch.public_key(), KeyRole.DISPATCH, "dispatch-1"),
        ]
        entries += [
            trusted_key(key.public_key(), KeyRole.CAMERA, cid) for cid, key in self.cameras.items()
        ]
        return TrustStore(entries)


@asynccontextmanager
async def two_gateway_mesh(
    mosquitto: MosquittoProcess, topics: Topics, log: Path
) -> AsyncIterator[tuple[Mesh, Keys]]:
    keys = Keys(cameras={s.camera_id: Ed25519PrivateKey.generate() for s in DEFAULT_SPECS})
    trust = keys.store()

    def camera_security(spec: CameraSpec) -> Security:
        return Security(signer=PayloadSigner(keys.cameras[spec.camera_id]), trust=trust)

    gateway = make_gateway(
        mosquitto.url,
        topics,
        log,
        policy=POLICY,
        client_id=f"t-gw-{uuid.uuid4().hex[:6]}",
        security=Security(signer=PayloadSigner(keys.gateway), trust=trust),
    )
    async with running_mesh(
        mosquitto.url, topics, log, gateway=gateway, security_of=camera_security
    ) as mesh:
        yield mesh, keys


def logged_command(log: Path, activation_id: str) -> RecordStart:
    for row in read_records(log, kinds=(RecordKind.ACTIVATION.value,)):
        entry = ActivationEntry.model_validate_json(row.body)
        if entry.command.activation_id == activation_id:
            return entry.command
    raise AssertionError(f"activation {activation_id} not in the log")


def cancel_acks(log: Path, activation_id: str) -> list[CancelAckEntry]:
    rows = read_records(log, activation_id=activation_id, kinds=(RecordKind.CANCEL_ACK.value,))
    return [CancelAckEntry.model_validate_json(r.body) for r in rows]


def recording(mesh: Mesh, cameras: list[str]) -> list[str]:
    now = time.time_ns()
    return [c for c in cameras if mesh.agents[c].recorder.is_recording(now)]


async def test_only_the_issuer_may_cancel_and_only_before_the_deadline(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    async with two_gateway_mesh(mosquitto, topics, log) as (mesh, keys):
        dispatch = PayloadSigner(keys.dispatch)
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW), signer=dispatch)
        aid = record.activation_id
        assert record.state is ActivationState.CONFIRMED
        started = sorted(c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED)
        assert started == ["bwc-12a", "bwc-7a", "dash-12"]
        command = logged_command(log, aid)
        assert command.cancel_until_ns == command.issued_at_ns + int(WINDOW_S * NS)
        coordinator = mesh.gateway.coordinator

        # gw-car-7's key, inside the window, on cmd/all, naming itself: the attack of the
        # issue. Validly signed, and refused: it is not the issuer of what they record.
        stolen = PayloadSigner(keys.other_gateway).seal(
            RecordCancel(activation_id=aid, issuer=OTHER, reason="x", at_ns=time.time_ns())
        )
        await mesh.driver.publish(topics.command_all(), stolen.to_bytes())
        await wait_until(lambda: coordinator.counters["cancel_acks.refused"] == len(started))
        assert recording(mesh, started) == started
        for camera_id in started:
            assert mesh.agents[camera_id].counters["refused.cancel.not_issuer"] == 1
        # The same key naming gw-car-12 as the issuer: not its key to sign with.
        posing = PayloadSigner(keys.other_gateway).seal(
            RecordCancel(activation_id=aid, issuer=ISSUER, at_ns=time.time_ns())
        )
        await mesh.driver.publish(topics.command_all(), posing.to_bytes())
        # A dispatch-signed record_cancel straight to the cameras: dispatch cancels go
        # through the gateway (cancel/{unit}), never to the cameras directly.
        console = dispatch.seal(
            RecordCancel(activation_id=aid, issuer="dispatch-1", at_ns=time.time_ns())
        )
        await mesh.driver.publish(topics.command_unit(UNIT), console.to_bytes())
        bwc = mesh.agents["bwc-12a"]
        await wait_until(lambda: bwc.counters["refused.cancel.wrong_signer"] == 2)
        assert recording(mesh, started) == started

        # gw-car-12's own key, after the deadline its command carried (a replayed or
        # stolen-key cancel; the gateway itself refuses it by then).
        assert command.cancel_until_ns is not None
        await asyncio.sleep(max(0.0, (command.cancel_until_ns - time.time_ns()) / NS) + 0.2)
        late = PayloadSigner(keys.gateway).seal(
            RecordCancel(activation_id=aid, issuer=ISSUER, at_ns=time.time_ns())
        )
        await mesh.driver.publish(topics.command_all(), late.to_bytes())
        await wait_until(
            lambda: all(
                mesh.agents[c].counters["refused.cancel.deadline_passed"] == 1 for c in started
            )
        )
        assert recording(mesh, started) == started
        # Through the gateway, as a dispatcher would: refused there too.
        request = CancelRequest(
            cancel_id=f"c-{uuid.uuid4().hex[:12]}",
            activation_id=aid,
            unit_id=UNIT,
            by="dispatch:dana",
            at_ns=time.time_ns(),
        )
        await mesh.driver.publish(topics.cancel(UNIT), seal(keys.dispatch, request))
        receipt = await mesh.watcher.receipt(request.cancel_id, 10)
        assert receipt is not None
        assert receipt.outcome is ReceiptOutcome.REJECTED
        assert receipt.reason.startswith(f"the {WINDOW_S:g} s cancel window closed")

        # A genuine cancel in the window, through the gateway: the cameras stop, each
        # acks it, and gw-car-12's log says so.
        second = await mesh.activate(
            event(TriggerKind.WEAPON_DRAW, source_id="holster-2"), signer=dispatch
        )
        request = CancelRequest(
            cancel_id=f"c-{uuid.uuid4().hex[:12]}",
            activation_id=second.activation_id,
            unit_id=UNIT,
            by="officer:bwc-12a",
            reason="holster bumped",
            at_ns=time.time_ns(),
        )
        await mesh.driver.publish(topics.cancel(UNIT), seal(keys.dispatch, request))
        receipt = await mesh.watcher.receipt(request.cancel_id, 10)
        assert receipt is not None
        assert receipt.outcome is ReceiptOutcome.ACCEPTED, receipt.reason
        # The first activation's recording is the same recording (already_recording):
        # the cancel stops only what the second alone wants, i.e. nothing here.
        await wait_until(lambda: coordinator.counters["cancel_acks.kept_recording"] == 3)
        assert recording(mesh, started) == started
    refused = cancel_acks(log, aid)
    assert sorted(e.ack.camera_id for e in refused if e.ack.cancel_issuer == OTHER) == started
    assert all(e.effect == "refused" for e in refused)
    assert all(e.jws is not None for e in refused)  # signed by each camera, kept as sent
    reasons = {e.ack.reason.split(":")[0] for e in refused}
    assert {"not_issuer", "deadline_passed"} <= reasons
    # An auditor's report shows each refusal on the activation's timeline.
    report = collect(read_records(log))
    timeline = next(t for t in report.timelines if t.activation_id == aid)
    refusals = [m for m in timeline.marks if m.tag == "cancel ack"]
    by_other = [m for m in refusals if m.label.startswith(f"cancel by {OTHER}: refused")]
    assert sorted(m.camera_id or "" for m in by_other) == started
    assert report.unreadable == 0
    kept = cancel_acks(log, second.activation_id)
    assert sorted(e.ack.camera_id for e in kept) == started
    assert {e.ack.outcome for e in kept} == {CancelOutcome.KEPT_RECORDING}


async def test_a_genuine_cancel_in_its_window_stops_and_is_acked_and_logged(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    async with two_gateway_mesh(mosquitto, topics, log) as (mesh, keys):
        dispatch = PayloadSigner(keys.dispatch)
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW), signer=dispatch)
        started = sorted(c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED)
        request = CancelRequest(
            cancel_id=f"c-{uuid.uuid4().hex[:12]}",
            activation_id=record.activation_id,
            unit_id=UNIT,
            by="officer:bwc-12a",
            reason="holster bumped",
            at_ns=time.time_ns(),
        )
        await mesh.driver.publish(topics.cancel(UNIT), seal(keys.dispatch, request))
        coordinator = mesh.gateway.coordinator
        await wait_until(lambda: coordinator.counters["cancel_acks.stopped"] == len(started))
        assert recording(mesh, started) == []
        # The same signed cancel again (on every topic it went to, or replayed): nothing
        # more happens and nothing more is logged.
        for camera_id in started:
            assert mesh.agents[camera_id].counters["cancel.stopped"] == 1
        await wait_until(
            lambda: mesh.watcher.records[record.activation_id].state is ActivationState.CANCELLED
        )
    logged = cancel_acks(log, record.activation_id)
    assert sorted(e.ack.camera_id for e in logged) == started
    assert {(e.effect, e.ack.outcome, e.ack.cancel_issuer) for e in logged} == {
        ("stopped", CancelOutcome.STOPPED, ISSUER)
    }


def seal(key: Ed25519PrivateKey, payload: BaseModel) -> bytes:
    """``payload`` as the holder of ``key`` sends it: signed (a JWS of its bytes)."""
    return PayloadSigner(key).seal(payload).to_bytes()


def foreign_start(keys: Keys, trigger: TriggerEvent, camera_id: str) -> RecordStart:
    """gw-car-7's key (validly) starting one camera for the activation id that
    ``trigger`` will get at gw-car-12: the ids are derived from the event id, which a
    BLE counter makes predictable."""
    now = time.time_ns()
    return RecordStart(
        activation_id=activation_id_for(trigger.event_id),
        issuer=OTHER,
        trigger=TriggerSummary.of(trigger),
        issued_at_ns=now,
        origin=None,
        radius_m=0,
        pre_event_s=30,
        targets=Targets(cameras=(camera_id,)),
        expires_at_ns=now + 10 * NS,
        cancel_until_ns=now + 60 * NS,
    )


def foreign_cancel(keys: Keys, activation_id: str, at_ns: int | None = None) -> RecordCancel:
    return RecordCancel(
        activation_id=activation_id,
        issuer=OTHER,
        at_ns=time.time_ns() if at_ns is None else at_ns,
    )


async def test_another_gateway_cannot_use_up_an_activation_id_it_predicted(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The review's F2: gw-car-7's key starts, then at once cancels, each of car-12's
    cameras for the id of car-12's next weapon draw. Before the fix the genuine command
    was then a "duplicate": ignored on the unit topic, acked ``already_recording`` on
    the direct retry, while the camera was not recording, and car-12 logged confirmed."""
    log = tmp_path / "log.db"
    async with two_gateway_mesh(mosquitto, topics, log) as (mesh, keys):
        targets = ["bwc-12a", "bwc-7a", "dash-12"]
        trigger = event(TriggerKind.WEAPON_DRAW)
        aid = activation_id_for(trigger.event_id)
        for camera_id in targets:
            await mesh.driver.publish(
                topics.command_camera(camera_id),
                seal(keys.other_gateway, foreign_start(keys, trigger, camera_id)),
            )
        await wait_until(lambda: recording(mesh, targets) == targets)
        for camera_id in targets:
            await mesh.driver.publish(
                topics.command_camera(camera_id),
                seal(keys.other_gateway, foreign_cancel(keys, aid)),
            )
        await wait_until(
            lambda: all(mesh.agents[c].counters["cancel.stopped"] == 1 for c in targets)
        )
        assert recording(mesh, targets) == []

        record = await mesh.activate(trigger, signer=PayloadSigner(keys.dispatch))
        assert record.activation_id == aid
        assert record.state is ActivationState.CONFIRMED
        outcomes = {c.camera_id: c.status for c in record.cameras}
        # What the log says is true: every camera that confirmed is recording.
        assert recording(mesh, targets) == targets, outcomes
        assert {c: outcomes[c] for c in targets} == dict.fromkeys(targets, OutcomeStatus.STARTED)
        for camera_id in targets:
            acks = [
                a
                for a in mesh.agents[camera_id].acks_sent
                if a.activation_id == aid and a.status is not AckStatus.REJECTED
            ]
            # The attacker's start, and car-12's own: started both times.
            assert [a.status for a in acks] == [AckStatus.STARTED, AckStatus.STARTED]


async def test_a_neighbour_issuing_the_same_id_first_does_not_take_the_cancel_away(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """gw-car-7 starts bwc-12a for the id first and keeps its claim; car-12's own
    activation joins the recording as a second claim. car-12's cancel removes its claim
    alone (bwc-12a goes on for gw-car-7, the other cameras stop); gw-car-7's cancel then
    stops bwc-12a. A cancel signed before the command it names is refused (F6)."""
    log = tmp_path / "log.db"
    async with two_gateway_mesh(mosquitto, topics, log) as (mesh, keys):
        trigger = event(TriggerKind.WEAPON_DRAW)
        aid = activation_id_for(trigger.event_id)
        neighbour = foreign_start(keys, trigger, "bwc-12a")
        await mesh.driver.publish(
            topics.command_camera("bwc-12a"), seal(keys.other_gateway, neighbour)
        )
        bwc = mesh.agents["bwc-12a"]
        await wait_until(lambda: recording(mesh, ["bwc-12a"]) == ["bwc-12a"])

        record = await mesh.activate(trigger, signer=PayloadSigner(keys.dispatch))
        outcomes = {c.camera_id: c.status for c in record.cameras}
        assert outcomes["bwc-12a"] is OutcomeStatus.ALREADY_RECORDING
        started = sorted(c for c, s in outcomes.items() if s is OutcomeStatus.STARTED)
        assert started == ["bwc-7a", "dash-12"]

        request = CancelRequest(
            cancel_id=f"c-{uuid.uuid4().hex[:12]}",
            activation_id=aid,
            unit_id=UNIT,
            by="officer:bwc-12a",
            at_ns=time.time_ns(),
        )
        await mesh.driver.publish(topics.cancel(UNIT), seal(keys.dispatch, request))
        coordinator = mesh.gateway.coordinator
        await wait_until(lambda: coordinator.counters["cancel_acks.stopped"] == 2)
        await wait_until(lambda: coordinator.counters["cancel_acks.kept_recording"] == 1)
        assert coordinator.counters["cancel_acks.refused"] == 0
        assert recording(mesh, ["bwc-12a", *started]) == ["bwc-12a"]

        # gw-car-7's cancel dated before its own command: refused, still recording.
        early = foreign_cancel(keys, aid, at_ns=neighbour.issued_at_ns - 1)
        await mesh.driver.publish(topics.command_camera("bwc-12a"), seal(keys.other_gateway, early))
        await wait_until(lambda: bwc.counters["refused.cancel.before_command"] == 1)
        assert recording(mesh, ["bwc-12a"]) == ["bwc-12a"]
        # Its genuine cancel removes the last claim: bwc-12a stops.
        await mesh.driver.publish(
            topics.command_camera("bwc-12a"), seal(keys.other_gateway, foreign_cancel(keys, aid))
        )
        await wait_until(lambda: bwc.counters["cancel.stopped"] == 1)
        assert recording(mesh, ["bwc-12a"]) == []
    logged = cancel_acks(log, aid)
    by_camera = {e.ack.camera_id: (e.effect, e.ack.outcome) for e in logged}
    assert by_camera == {
        "bwc-12a": ("kept_recording", CancelOutcome.KEPT_RECORDING),
        "bwc-7a": ("stopped", CancelOutcome.STOPPED),
        "dash-12": ("stopped", CancelOutcome.STOPPED),
    }
