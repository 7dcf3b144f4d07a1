"""Review finding F3: a flood of badly signed commands on a camera's own topic.

Any gateway may write ``cmd/camera/<id>`` (its retries go there), so a gateway's broker
credential without its signing key can flood it. Before, that topic shared the camera's
most urgent lane with its unit topic, unbudgeted: every forgery had a full Ed25519 check
(about 3,700 a second) and a flood of 20,000 a second shed the genuine unit command from
the lane. Here the real camera agent is handed the flood as its connection would hand it
over (in 5 ms batches, without a broker: what the broker and the connection do with a
flood is tests/test_camera_flood_e2e.py's part), and gw-car-12's genuine commands must
still be handled while it runs: one on the unit topic and one direct retry on the very
topic being flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.client import Inbound
from bridge.codec import encode
from bridge.topics import Topics
from bridge.urls import BrokerUrl
from mesh.camera_agent import CameraAgent, CameraIdentity
from mesh.models import CameraRole, RecordStart, Targets, TriggerKind, TriggerSummary
from mesh.recorder import SimulatedRecorder
from mesh.security import Security
from mesh.signing import PayloadSigner
from mesh.trust import KeyRole, TrustStore, trusted_key
from tests.command_flood_tools import flood_file
from tests.harness import CENTER, UNIT, event

NS = 1_000_000_000
ISSUER = f"gw-{UNIT}"
FLOODER = "gw-car-7"
FLOOD_PER_S = 20_000
BATCH_S = 0.005
FLOOD_S = 3.0


def genuine(signer: PayloadSigner, attempt: int) -> RecordStart:
    now = time.time_ns()
    return signer.sign(
        RecordStart(
            activation_id=f"a-genuine-{attempt}",
            issuer=ISSUER,
            trigger=TriggerSummary.of(event(TriggerKind.WEAPON_DRAW)),
            issued_at_ns=now,
            origin=CENTER,
            radius_m=150.0,
            pre_event_s=30,
            targets=Targets(units=(UNIT,)),
            expires_at_ns=now + 10 * NS,
            attempt=attempt,
        )
    )


async def test_a_flood_on_the_cameras_own_topic_sheds_neither_unit_commands_nor_retries(
    topics: Topics, tmp_path: Path
) -> None:
    gateway, flooder, camera_key = (Ed25519PrivateKey.generate() for _ in range(3))
    flooder_entry = trusted_key(flooder.public_key(), KeyRole.GATEWAY, FLOODER)
    trust = TrustStore(
        [
            trusted_key(gateway.public_key(), KeyRole.GATEWAY, ISSUER),
            flooder_entry,
            trusted_key(camera_key.public_key(), KeyRole.CAMERA, "bwc-12a"),
        ]
    )
    camera = CameraAgent(
        CameraIdentity("bwc-12a", UNIT, CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),  # never connected: fed by hand
        topics=topics,
        position=CENTER,
        # Every recording ends at once, so each genuine command starts one.
        recorder=SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * NS, record_s=0.001),
        security=Security(signer=PayloadSigner(camera_key), trust=trust),
    )
    lines = flood_file(tmp_path / "flood.txt", 2000, FLOODER, flooder_entry.key_id)
    forgeries = lines.read_bytes().splitlines()
    own_topic = topics.command_camera("bwc-12a")
    per_batch = int(FLOOD_PER_S * BATCH_S)
    flooded = {"sent": 0}

    async def flood() -> None:
        began = time.monotonic()
        while time.monotonic() - began < FLOOD_S:
            for _ in range(per_batch):
                payload = forgeries[flooded["sent"] % len(forgeries)]
                camera._on_message(Inbound(own_topic, payload, False))
                flooded["sent"] += 1
            await asyncio.sleep(BATCH_S)

    def started(activation_id: str) -> bool:
        return any(ack.activation_id == activation_id for ack in camera.acks_sent)

    serving = asyncio.create_task(camera._serve_commands())
    flooding = asyncio.create_task(flood())
    try:
        await asyncio.sleep(0.5)  # the lanes are full of forgeries by now
        signer = PayloadSigner(gateway)
        unit_command, retry = genuine(signer, 1), genuine(signer, 2)
        camera._on_message(Inbound(topics.command_unit(UNIT), encode(unit_command), False))
        camera._on_message(Inbound(own_topic, encode(retry), False))
        sent_at = flooded["sent"]
        while not flooding.done() and not (
            started(unit_command.activation_id) and started(retry.activation_id)
        ):
            await asyncio.sleep(0.001)
        forgeries_meanwhile = flooded["sent"] - sent_at
        figures = (
            f"forgeries sent: {flooded['sent']}, {forgeries_meanwhile} of them after the "
            f"genuine ones; acks {[a.activation_id for a in camera.acks_sent][-4:]}; "
            f"counters {dict(camera.counters)}"
        )
        print(figures)
        # Both handled (started, acked) while the flood was still running...
        assert not flooding.done(), figures
        assert started(unit_command.activation_id), figures
        assert started(retry.activation_id), figures
        # ... with thousands of forgeries ahead of them (fewer than the nominal 10,000 on
        # a busy machine), shed, not checked one by one.
        assert sent_at >= 1000, figures
        assert camera.counters["refused.command.bad_signature"] < flooded["sent"] / 10, figures
        assert camera.counters["intake.dropped.unit"] == 0, figures
    finally:
        for task in (serving, flooding):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
