"""A camera written only from docs/protocol.md (docs/examples/paho_camera.py, plain paho)
takes part in an activation of the real gateway like any other camera, signed or not."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.geo import offset
from mesh.protocol.models import ActivationState, OutcomeStatus, TriggerKind
from tests.chaos_tools import wait_for
from tests.harness import CENTER, event, running_mesh, wait_until
from tests.integration.test_node_camera import (
    Camera,
    forged_command,
    gateway,
    make_keys,
    scene,
    signed_trigger,
    unwrap,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "paho_camera.py"


async def test_a_camera_written_from_the_protocol_document_joins_in(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        lat, lon = offset(CENTER.lat, CENTER.lon, 60, 30)
        camera = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE),
                "127.0.0.1",
                str(mosquitto.port),
                topics.prefix,
                "paho-1",
                "car-7",
                str(lat),
                str(lon),
            ],
        )
        try:
            await wait_until(lambda: mesh.gateway.presence.get("paho-1") is not None)
            record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
            assert record.state is ActivationState.CONFIRMED
            paho = next(c for c in record.cameras if c.camera_id == "paho-1")
            assert paho.expected
            assert paho.status is OutcomeStatus.STARTED
            assert paho.attempts == 1  # heard it on its cell's topic: no retry needed
            # Killed without a goodbye: the broker publishes its last will (offline).
            camera.kill()
            camera.wait()
            await wait_until(
                lambda: not mesh.gateway.presence.get("paho-1").online,  # type: ignore[union-attr]
                timeout_s=90,
            )
        finally:
            if camera.poll() is None:
                camera.kill()
            await mesh.driver.publish(topics.presence("paho-1"), b"", retain=True)


async def test_the_example_camera_in_a_signed_fleet(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """With a key and the trust store it starts only on a command signed by its issuer (an
    unsigned one in the gateway's name gets a `rejected` ack), and the real gateway daemon
    takes its signed ack."""
    gateway_id = f"gw-paho-{uuid.uuid4().hex[:6]}"
    trust = make_keys(tmp_path, ("gateway", gateway_id), ("camera", "paho-s1"))
    lat, lon = offset(CENTER.lat, CENTER.lon, 60, 30)
    camera = Camera(
        "paho-s1",
        [sys.executable, str(EXAMPLE), "127.0.0.1", str(mosquitto.port), topics.prefix,
         "paho-s1", "car-7", repr(lat), repr(lon),
         str(tmp_path / "keys" / "paho-s1.key"), str(trust)],
        tmp_path,
        logs_ready=False,
    )  # fmt: skip
    runner = gateway(tmp_path, mosquitto, topics, gateway_id, trust)
    async with scene(mosquitto, topics, runner, gateway_id, [camera]) as (_obs, sender, wire):
        acks = f"{topics.prefix}/ack/{gateway_id}/paho-s1"
        await sender.link.publish(f"{topics.prefix}/cmd/camera/paho-s1", forged_command(gateway_id))
        await wait_for(lambda: bool(wire.on(acks)), 10, "the refusal")
        refused = unwrap(wire.on(acks)[0])
        assert (refused["status"], refused["reason"].split(":")[0]) == ("rejected", "unsigned")
        record = await signed_trigger(mosquitto, topics, tmp_path / "keys" / f"{gateway_id}.key")
        assert record.state is ActivationState.CONFIRMED, record
        assert [(c.camera_id, c.status, c.expected) for c in record.cameras] == [
            ("paho-s1", OutcomeStatus.STARTED, True)
        ]
        assert all("signature" in json.loads(m) for m in wire.on(acks))
        assert [unwrap(m)["v"] for m in wire.on(acks)] == [2, 2]
