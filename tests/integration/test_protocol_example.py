"""A camera written only from docs/protocol.md (docs/examples/paho_camera.py, plain paho)
takes part in an activation of the real gateway like any other camera."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.geo import offset
from mesh.protocol.models import ActivationState, OutcomeStatus, TriggerKind
from tests.harness import CENTER, event, running_mesh, wait_until

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
