"""Signed commands, acks and requests over a real mosquitto: what a rogue MQTT client can
no longer do once the gateway, the cameras and dispatch sign and check (docs/security.md).

The broker here is the plain test broker (anyone may publish): these tests show what the
signatures hold by themselves. tests/integration/test_secure_demo.py adds TLS and the ACL.
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

from bridge.mqtt.client import Inbound
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.clock import NS
from mesh.decide.policy import Policy
from mesh.journal.records import RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import encode
from mesh.protocol.jws import Jws, b64url
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CancelRequest,
    OutcomeStatus,
    ReceiptOutcome,
    RecordCancel,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from mesh.sim.camera_fleet import CameraSpec
from tests.harness import (
    CENTER,
    DEFAULT_SPECS,
    UNIT,
    Mesh,
    event,
    ghost,
    listen,
    make_gateway,
    running_mesh,
    wait_until,
)

ISSUER = f"gw-{UNIT}"
FAST = Policy.model_validate({"defaults": {"ack_deadline_ms": 150, "max_retries": 1}})


@dataclass
class Keys:
    gateway: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    dispatch: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    stranger: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    cameras: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def store(self) -> TrustStore:
        entries = [
            trusted_key(self.gateway.public_key(), KeyRole.GATEWAY, ISSUER),
            trusted_key(self.dispatch.public_key(), KeyRole.DISPATCH, "dispatch-1"),
        ]
        entries += [
            trusted_key(key.public_key(), KeyRole.CAMERA, cid) for cid, key in self.cameras.items()
        ]
        return TrustStore(entries)

    @property
    def dispatch_signer(self) -> PayloadSigner:
        return PayloadSigner(self.dispatch)


@asynccontextmanager
async def signed_mesh(
    url_topics: tuple[MosquittoProcess, Topics], log: Path, policy: Policy | None = None
) -> AsyncIterator[tuple[Mesh, Keys]]:
    broker, topics = url_topics
    keys = Keys(cameras={s.camera_id: Ed25519PrivateKey.generate() for s in DEFAULT_SPECS})
    trust = keys.store()

    def camera_security(spec: CameraSpec) -> Security:
        return Security(signer=PayloadSigner(keys.cameras[spec.camera_id]), trust=trust)

    gateway = make_gateway(
        broker.url,
        topics,
        log,
        policy=policy,
        client_id=f"t-gw-{uuid.uuid4().hex[:6]}",
        security=Security(signer=PayloadSigner(keys.gateway), trust=trust),
    )
    async with running_mesh(
        broker.url, topics, log, gateway=gateway, security_of=camera_security
    ) as mesh:
        yield mesh, keys


def command(
    activation_id: str, *, issued_ns: int, ttl_s: float = 30, attempt: int = 0
) -> RecordStart:
    trigger = event(TriggerKind.WEAPON_DRAW)
    return RecordStart(
        activation_id=activation_id,
        issuer=ISSUER,
        trigger=TriggerSummary.of(trigger),
        issued_at_ns=issued_ns,
        origin=CENTER,
        radius_m=150.0,
        pre_event_s=30,
        targets=Targets(units=(UNIT,)),
        expires_at_ns=issued_ns + int(ttl_s * NS),
        attempt=attempt,
    )


def acks_of(got: list[Inbound], activation_id: str) -> list[CameraAck]:
    """The acks among ``got`` for one activation, read (signed or not; not checked)."""
    acks = [Security().open(CameraAck, m.payload).model for m in got]
    return [a for a in acks if a.activation_id == activation_id]


def signed_by_their_camera(got: list[Inbound], trust: TrustStore) -> bool:
    """Every ack among ``got`` is a JWS that verifies with the key of the camera it names."""
    security = Security(trust=trust)
    for message in got:
        received = security.open(CameraAck, message.payload)
        if received.jws is None or security.check_ack(received, time.time_ns()) is not None:
            return False
    return True


async def test_a_signed_mesh_confirms_and_every_ack_is_signed(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with signed_mesh((mosquitto, topics), tmp_path / "log.db") as (mesh, keys):
        acks = await listen(mesh, topics.acks_for(ISSUER))
        trigger = event(TriggerKind.WEAPON_DRAW)
        record = await mesh.activate(trigger, signer=keys.dispatch_signer)
        started = {c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED}
        assert started == {"dash-12", "bwc-12a", "bwc-7a"}
        await wait_until(lambda: len(acks_of(acks, record.activation_id)) >= 3)
        assert signed_by_their_camera(acks, keys.store())
        assert not any(k.startswith("rejected.ack") for k in mesh.gateway.counters)


async def test_cameras_refuse_unsigned_forged_wrongly_signed_tampered_and_expired_commands(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """Refused before parsing (an unknown key, a signature that does not verify): dropped
    unanswered and counted. Refused after (unsigned, another device's key, expired):
    answered with a signed `rejected` ack. Nothing starts either way."""
    async with signed_mesh((mosquitto, topics), tmp_path / "log.db") as (mesh, keys):
        acks = await listen(mesh, topics.acks_for(ISSUER))
        now = time.time_ns()
        gw = PayloadSigner(keys.gateway)
        genuine = gw.seal(command("a-tampered", issued_ns=now))
        wider = b64url(
            encode(command("a-tampered", issued_ns=now).model_copy(update={"radius_m": 5000.0}))
        )
        answered = {
            "a-unsigned": encode(command("a-unsigned", issued_ns=now)),
            "a-camera-key": PayloadSigner(keys.cameras["bwc-7a"])
            .seal(command("a-camera-key", issued_ns=now))
            .to_bytes(),
            "a-expired": gw.seal(
                command("a-expired", issued_ns=now - 60 * NS, ttl_s=30)
            ).to_bytes(),
        }
        dropped = {
            "a-stranger": PayloadSigner(keys.stranger)
            .seal(command("a-stranger", issued_ns=now))
            .to_bytes(),
            "a-tampered": Jws(genuine.protected, wider, genuine.signature, genuine.kid).to_bytes(),
        }
        expected_reason = {
            "a-unsigned": "unsigned",
            "a-camera-key": "wrong_signer",
            "a-expired": "command expired",
        }
        for forged in (*answered.values(), *dropped.values()):
            await mesh.driver.publish(topics.command_camera("bwc-12a"), forged)
            # On a shared topic too: refused the same way, nothing starts.
            await mesh.driver.publish(topics.command_unit(UNIT), forged)
        await wait_until(lambda: all(acks_of(acks, aid) for aid in answered))
        counters = mesh.agents["bwc-12a"].counters
        await wait_until(lambda: counters["rejected.command.bad_signature"] == 2)
        await wait_until(lambda: counters["rejected.command.unknown_key"] == 2)
        for aid, reason in expected_reason.items():
            answers = acks_of(acks, aid)
            assert {a.status for a in answers} == {AckStatus.REJECTED}, aid
            assert all(a.reason.startswith(reason) for a in answers), (aid, answers)
        assert signed_by_their_camera(acks, keys.store())  # the refusals are signed too
        for camera_id in ("bwc-12a", "dash-12"):
            assert not mesh.agents[camera_id].recorder.is_recording(time.time_ns())
        assert counters["refused.command.unsigned"] == 2
        # A genuine command right after: the camera was refusing, not broken.
        real = gw.seal(command("a-real", issued_ns=time.time_ns())).to_bytes()
        await mesh.driver.publish(topics.command_camera("bwc-12a"), real)
        await wait_until(lambda: acks_of(acks, "a-real"))
        assert acks_of(acks, "a-real")[0].status is AckStatus.STARTED
        assert not any(acks_of(acks, aid) for aid in dropped)  # never answered


async def test_a_replayed_command_is_refused_even_when_it_would_now_apply(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with signed_mesh((mosquitto, topics), tmp_path / "log.db") as (mesh, keys):
        acks = await listen(mesh, topics.acks_for(ISSUER))
        gw = PayloadSigner(keys.gateway)
        far = mesh.agents["bwc-far"]
        original = command("a-replay", issued_ns=time.time_ns())
        captured = gw.seal(original).to_bytes()
        await mesh.driver.publish(topics.command_camera("bwc-far"), captured)
        await wait_until(lambda: acks_of(acks, "a-replay"))
        assert acks_of(acks, "a-replay")[0].status is AckStatus.OUT_OF_RANGE  # 2 km away
        far.move_to(CENTER)  # the camera comes into range; the attacker resends the capture
        await mesh.driver.publish(topics.command_camera("bwc-far"), captured)
        await wait_until(lambda: len(acks_of(acks, "a-replay")) == 2)
        replayed = acks_of(acks, "a-replay")[1]
        assert replayed.status is AckStatus.REJECTED
        assert replayed.reason.startswith("replayed")
        assert not far.recorder.is_recording(time.time_ns())
        # The gateway's genuine retry (a new attempt, a new signature) is obeyed.
        retry = gw.seal(command("a-replay", issued_ns=original.issued_at_ns, attempt=1))
        await mesh.driver.publish(topics.command_camera("bwc-far"), retry.to_bytes())
        await wait_until(lambda: len(acks_of(acks, "a-replay")) == 3)
        assert acks_of(acks, "a-replay")[2].status is AckStatus.STARTED


async def test_forged_acks_cannot_hide_a_camera_that_did_not_record(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    async with signed_mesh((mosquitto, topics), log, FAST) as (mesh, keys):
        await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
        keys.cameras["bwc-silent"] = Ed25519PrivateKey.generate()  # provisioned, never acks
        commands = await listen(mesh, f"{topics.prefix}/cmd/#")

        async def forge_on_command() -> None:
            await wait_until(lambda: commands)
            aid = Security().open(RecordStart, commands[0].payload).model.activation_id
            base = CameraAck(
                activation_id=aid,
                camera_id="bwc-silent",
                unit_id="car-7",
                status=AckStatus.STARTED,
                received_at_ns=time.time_ns(),
            )
            forgeries = [
                encode(base),  # unsigned
                PayloadSigner(keys.cameras["bwc-12a"]).seal(base).to_bytes(),  # another camera
                PayloadSigner(keys.gateway).seal(base).to_bytes(),  # the gateway's key
                PayloadSigner(keys.stranger).seal(base).to_bytes(),  # nobody's: not parsed
            ]
            for forged in forgeries:
                await mesh.driver.publish(topics.ack(ISSUER, "bwc-silent"), forged)

        forger = asyncio.create_task(forge_on_command())
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW), signer=keys.dispatch_signer)
        await forger
        silent = next(c for c in record.cameras if c.camera_id == "bwc-silent")
        assert silent.status is OutcomeStatus.MISSED
        counters = mesh.gateway.counters
        assert counters["rejected.ack.unsigned"] == 1
        assert counters["rejected.ack.wrong_signer"] == 2
        assert counters["rejected.ack.unknown_key"] == 1
    # The forgeries that were parsed are in the activation log as evidence, marked
    # untrusted, the signed ones with the JWS received (an auditor can check the key);
    # the one signed by an unknown key was dropped unparsed, and only counted.
    untrusted = [
        r
        for r in read_records(log)
        if r.kind == RecordKind.ACK and '"effect":"untrusted:' in r.body
    ]
    assert len(untrusted) == 3
    assert sum('"jws":{"protected":' in r.body for r in untrusted) == 2


async def test_remote_triggers_and_cancels_need_a_dispatch_signature(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with signed_mesh((mosquitto, topics), tmp_path / "log.db") as (mesh, keys):
        dispatch = PayloadSigner(keys.dispatch)
        unsigned = event(TriggerKind.DISPATCH, source_id="rogue")
        await mesh.send(unsigned)
        receipt = await mesh.receipt(unsigned)
        assert receipt.outcome is ReceiptOutcome.REJECTED
        assert receipt.reason.startswith("unsigned")
        wrong = event(TriggerKind.DISPATCH, source_id="rogue")
        await mesh.send(wrong, signer=PayloadSigner(keys.cameras["bwc-12a"]))  # a camera's key
        receipt = await mesh.receipt(wrong)
        assert receipt.outcome is ReceiptOutcome.REJECTED
        assert "trigger must be signed by dispatch" in receipt.reason
        # Signed by nobody the gateway knows: dropped before it is read, counted, unanswered.
        forged = event(TriggerKind.DISPATCH, source_id="rogue")
        await mesh.send(forged, signer=PayloadSigner(keys.stranger))
        await wait_until(lambda: mesh.gateway.counters["rejected.trigger.unknown_key"] == 1)
        genuine = event(TriggerKind.DISPATCH, source_id="dispatch:ops")
        record = await mesh.activate(genuine, signer=dispatch)
        assert record.cameras
        # A forged cancel of that activation is refused; the recordings go on.
        cancel = CancelRequest(
            cancel_id=f"c-{uuid.uuid4().hex}",
            activation_id=record.activation_id,
            unit_id=UNIT,
            by="rogue",
            at_ns=time.time_ns(),
        )
        receipts = await listen(mesh, topics.receipt(UNIT))
        await mesh.driver.publish(topics.cancel(UNIT), encode(cancel))
        await wait_until(lambda: any(cancel.cancel_id.encode() in m.payload for m in receipts))
        assert b'"outcome":"rejected"' in receipts[-1].payload
        # And a forged record_cancel sent straight to the cameras stops nothing.
        notice = RecordCancel(
            activation_id=record.activation_id, issuer=ISSUER, at_ns=time.time_ns()
        )
        await mesh.driver.publish(topics.command_unit(UNIT), encode(notice))
        bwc = mesh.agents["bwc-12a"]
        await wait_until(lambda: bwc.counters["refused.cancel.unsigned"] == 1)
        assert bwc.recorder.is_recording(time.time_ns())
        await asyncio.sleep(0)


async def test_the_console_signs_its_remote_activations_and_cancels(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    from mesh.dispatch.console.hub import ConsoleHub

    async with signed_mesh((mosquitto, topics), tmp_path / "log.db") as (mesh, keys):
        unsigned_hub = ConsoleHub(mosquitto.url, topics, client_id=f"t-{uuid.uuid4().hex[:6]}")
        hub = ConsoleHub(
            mosquitto.url,
            topics,
            client_id=f"t-{uuid.uuid4().hex[:6]}",
            signer=PayloadSigner(keys.dispatch),
        )
        tasks = [asyncio.create_task(h.run()) for h in (hub, unsigned_hub)]
        mesh.tasks += tasks
        await hub.link.wait_up(10)
        await unsigned_hub.link.wait_up(10)
        refused = await unsigned_hub.activate("dana", UNIT)
        assert refused is not None
        assert refused.outcome is ReceiptOutcome.REJECTED
        assert refused.reason.startswith("unsigned")
        accepted = await hub.activate("dana", UNIT)
        assert accepted is not None
        assert accepted.outcome is ReceiptOutcome.ACCEPTED
        assert accepted.activation_id is not None
        # A signed cancel reaches the policy (which allows no cancelling of a dispatch
        # activation); an unsigned one is refused before it.
        judged = await hub.cancel("dana", UNIT, accepted.activation_id, "false alarm")
        assert judged is not None
        assert judged.reason == "the policy allows no cancelling of dispatch activations"
        unsigned = await unsigned_hub.cancel("dana", UNIT, accepted.activation_id, "x")
        assert unsigned is not None
        assert unsigned.reason.startswith("unsigned")
