"""Malformed payloads on every subscribed topic are logged with a reason, counted, and the
daemons keep serving. And the same mesh once more over the amqtt fallback broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

from structlog.testing import capture_logs

from bridge.mqtt.embedded import EmbeddedBroker, MosquittoProcess
from bridge.topics import Topics
from mesh.protocol.models import ActivationState, TriggerKind
from tests.harness import UNIT, event, running_mesh, wait_until

NOW = time.time_ns()
# One payload per kind of damage: not JSON, valid JSON of the wrong type, a required
# field missing, and 1 MB.
GARBAGE = {
    "not_json": b"\x00\xffnot json{",
    "wrong_type": json.dumps({"type": "presence", "v": 2}).encode(),
    "missing_field": None,  # filled per topic: the right type with a field left out
    "too_large": b"{" + b" " * (1024 * 1024) + b"}",
}
MISSING = {
    "trigger": {
        "type": "trigger",
        "v": 2,
        "kind": "weapon_draw",
        "unit_id": UNIT,
        "observed_at_ns": str(NOW),
    },  # no event_id, no source
    "ack": {
        "type": "ack",
        "v": 2,
        "camera_id": "bwc-7a",
        "status": "started",
        "received_at_ns": str(NOW),
    },  # no activation_id
    "presence": {
        "type": "presence",
        "v": 2,
        "camera_id": "bwc-x",
        "unit_id": "car-1",
        "online": True,
        "recording": False,
    },  # no role, no last_seen_ns
    "record_start": {"type": "record_start", "v": 2, "activation_id": "a-1"},
}


def payloads(kind: str) -> dict[str, bytes]:
    out = {code: p for code, p in GARBAGE.items() if p is not None}
    out["missing_field"] = json.dumps(MISSING[kind]).encode()
    if kind == "presence":  # a presence message of the wrong type: use a trigger
        out["wrong_type"] = json.dumps({"type": "trigger", "v": 2}).encode()
    return out


async def test_malformed_payloads_on_every_topic_are_counted_and_survived(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    with capture_logs() as logged:
        async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
            gateway_topics = {
                "trigger": topics.trigger(UNIT),
                "ack": topics.ack(mesh.gateway.settings.issuer, "bwc-7a"),
                "presence": topics.presence("bwc-x"),
            }
            camera_topics = {
                "cmd_all": topics.command_all(),
                "cmd_camera": topics.command_camera("bwc-7a"),
            }
            for kind, topic in gateway_topics.items():
                for payload in payloads(kind).values():
                    await mesh.driver.publish(topic, payload)
            for topic in camera_topics.values():
                for payload in payloads("record_start").values():
                    await mesh.driver.publish(topic, payload)

            expected_gateway = {
                f"rejected.{kind}.{code}" for kind in gateway_topics for code in payloads(kind)
            }
            await wait_until(lambda: expected_gateway <= set(mesh.gateway.all_counters()))
            camera = mesh.agents["bwc-7a"]
            expected_camera = {f"rejected.command.{code}" for code in payloads("record_start")}
            await wait_until(lambda: expected_camera <= set(camera.counters))
            assert camera.counters["rejected.command.not_json"] == 2  # broadcast and direct

            # Still serving: a real trigger after all that is confirmed by every camera.
            record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
            assert record.state is ActivationState.CONFIRMED
            assert len(record.cameras) == 3
            # The retained garbage presence did not register a camera.
            assert mesh.gateway.presence.get("bwc-x") is None
            await mesh.driver.publish(topics.presence("bwc-x"), b"", retain=True)

    rejected = [e for e in logged if e["event"] in ("payload rejected", "command rejected")]
    reasons = {(e["topic"], e["code"]) for e in rejected}
    assert (topics.trigger(UNIT), "not_json") in reasons
    assert (topics.command_camera("bwc-7a"), "too_large") in reasons
    too_large = next(e for e in rejected if e["code"] == "too_large")
    assert "exceeds the" in too_large["reason"]
    wrong = next(
        e for e in rejected if e["code"] == "wrong_type" and e["topic"] == topics.trigger(UNIT)
    )
    assert wrong["reason"] == "expected type 'trigger', got 'presence'"


async def test_payload_that_contradicts_its_topic_is_rejected(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        other_unit = event(unit="car-99")
        await mesh.driver.publish(topics.trigger(UNIT), other_unit.model_dump_json().encode())
        await wait_until(lambda: mesh.gateway.counters["rejected.trigger.unit_mismatch"] == 1)
        assert mesh.gateway.coordinator.counters["activations.started"] == 0


async def test_the_mesh_works_on_the_amqtt_fallback_broker(topics: Topics, tmp_path: Path) -> None:
    async with EmbeddedBroker(prefer="amqtt") as broker:
        assert broker.kind == "amqtt"
        # protocol "auto": every client probes MQTT 5, gets no answer, and falls back.
        async with running_mesh(broker.url, topics, tmp_path / "log.db", protocol="auto") as mesh:
            record = await mesh.activate(event(TriggerKind.TASER_ARM))
            assert record.state is ActivationState.CONFIRMED
            assert {c.camera_id for c in record.cameras} == {"dash-12", "bwc-12a", "bwc-7a"}
            assert mesh.gateway.link.protocol == "3.1.1"
            assert all(a.link.protocol == "3.1.1" for a in mesh.agents.values())
