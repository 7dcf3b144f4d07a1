"""docs/examples/node-camera/ (a camera in Node.js written from docs/ alone) against a real
mosquitto and the real gateway daemon: it starts on its cell's command, stays silent when
out of range, signs its acks and answers a cancel in a signed fleet. Its own unit tests
(`node --test`, docs/vectors) run here too.

Needs node and `npm ci` in docs/examples/node-camera (`make test` does it): under CI=true
a missing one fails, elsewhere it skips."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.geo import offset
from mesh.protocol.models import ActivationRecord, ActivationState, OutcomeStatus, TriggerKind
from tests.chaos_tools import (
    GatewayRunner,
    Observer,
    TriggerSender,
    running,
    wait_for,
    write_gateway_config,
)
from tests.conftest import IN_CI
from tests.harness import CENTER, UNIT

REPO = Path(__file__).resolve().parents[2]
NODE_CAMERA = REPO / "docs" / "examples" / "node-camera"
NEAR = offset(CENTER.lat, CENTER.lon, 60, 30)  # 67 m from the car: in a weapon draw's 150 m
FAR = offset(CENTER.lat, CENTER.lon, 0, 250)  # 250 m: out of range, in the same cell (dr4e39)


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the camera's pinned `mqtt` installed (npm ci in docs/examples/node-camera)."""
    binary = shutil.which("node")
    installed = (NODE_CAMERA / "node_modules" / "mqtt" / "package.json").is_file()
    if binary is None or not installed:
        message = (
            "node is not installed (apt-get install -y nodejs npm)"
            if binary is None
            else "run `npm ci` in docs/examples/node-camera (`make test` does)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


class Camera:
    """One camera process (Node or paho), its stdout collected line by line; `logs_ready`:
    it says "ready" once subscribed (the Node camera), else its presence is waited for."""

    def __init__(self, camera_id: str, args: Sequence[str], cwd: Path, logs_ready: bool) -> None:
        self.camera_id = camera_id
        self.logs_ready = logs_ready
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            list(args),
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def decisions(self, activation_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if activation_id is None or entry.get("activation_id") == activation_id:
                    out.append(entry)
        return out

    async def wait_for(self, decision: str, activation_id: str | None = None) -> dict[str, Any]:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"camera exited {self.process.returncode}:\n{self.output}")
            return any(d.get("decision") == decision for d in self.decisions(activation_id))

        await wait_for(seen, 20, f"camera decision {decision}")
        return next(d for d in self.decisions(activation_id) if d.get("decision") == decision)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        await self._reader


def node_camera(
    node: str, broker: MosquittoProcess, topics: Topics, camera_id: str, unit: str,
    at: tuple[float, float], *extra: str,
) -> Camera:  # fmt: skip
    lat, lon = at
    return Camera(
        camera_id,
        [node, "camera.mjs", "--broker", f"mqtt://127.0.0.1:{broker.port}",
         "--prefix", topics.prefix, "--id", camera_id, "--unit", unit,
         "--lat", repr(lat), "--lon", repr(lon), *extra],
        NODE_CAMERA,
        logs_ready=True,
    )  # fmt: skip


def make_keys(tmp_path: Path, *who: tuple[str, str]) -> Path:
    """`trigger-mesh keys new` for each (role, id): keys/ID.key and one trust store."""
    trust = tmp_path / "trust.yaml"
    for role, ident in who:
        made = subprocess.run(
            [sys.executable, "-m", "mesh", "keys", "new", "--role", role, "--id", ident,
             "--out", str(tmp_path / "keys"), "--trust", str(trust)],
            capture_output=True, text=True, check=False, cwd=REPO,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    return trust


def gateway(
    tmp_path: Path, broker: MosquittoProcess, topics: Topics, gateway_id: str,
    trust: Path | None = None,
) -> GatewayRunner:  # fmt: skip
    """The real gateway daemon for unit car-12 (docs/config.md), signed with a trust store."""
    config = write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=broker.url,
        topics=topics,
        gateway_id=gateway_id,
        log_path=tmp_path / "activations.db",
    )
    if trust is not None:
        document = yaml.safe_load(config.read_text())
        document["security"] = {
            "signing_key": str(tmp_path / "keys" / f"{gateway_id}.key"),
            "trust_store": str(trust),
        }
        config.write_text(yaml.safe_dump(document, sort_keys=False))
    return GatewayRunner(config, tmp_path)


class Wire:
    """Everything on {p}/ack/+/+ and {p}/presence/+, as the broker delivers it."""

    def __init__(self, broker: MosquittoProcess, topics: Topics) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.link = MqttLink(
            broker.url,
            LinkOptions(
                f"wire-{uuid.uuid4().hex[:8]}",
                subscriptions=((f"{topics.prefix}/ack/+/+", 1), (topics.presence("+"), 1)),
                persistent_session=False,
            ),
        )

    def on_message(self, message: Inbound) -> None:
        self.messages.append((message.topic, bytes(message.payload)))

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload in self.messages if t == topic]


@contextlib.asynccontextmanager
async def scene(
    broker: MosquittoProcess, topics: Topics, runner: GatewayRunner, gateway_id: str,
    cameras: Sequence[Camera],
) -> AsyncIterator[tuple[Observer, TriggerSender, Wire]]:  # fmt: skip
    """The cameras up (retained presence), then the gateway; stops them all afterwards."""
    observer = Observer(broker.url, topics, gateway_id)
    sender = TriggerSender(broker.url, topics)
    wire = Wire(broker, topics)

    try:
        async with (
            running(observer.link, handler=observer.on_message),
            running(wire.link, handler=wire.on_message),
            running(sender.link),
        ):
            try:
                for camera in cameras:
                    presence = topics.presence(camera.camera_id)
                    await wait_for(
                        lambda t=presence: bool(wire.on(t)), 20, f"presence on {presence}"
                    )
                    if camera.logs_ready:
                        await camera.wait_for("ready")
                await asyncio.sleep(0.2)  # subscribed (the paho camera right after its presence)
                runner.start()
                await observer.wait_gateway_up(runner)
                await asyncio.sleep(0.5)  # the gateway reads the retained presence
                yield observer, sender, wire
            finally:
                for camera in cameras:
                    await camera.stop()
                runner.close()
                for topic in {t for t, _ in wire.messages if "/presence/" in t}:
                    await sender.link.publish(topic, b"", retain=True)  # gone for good
    finally:
        for camera in cameras:
            await camera.stop()


async def final_record(observer: Observer, activation_id: str) -> ActivationRecord:
    def done() -> bool:
        record = observer.records.get(activation_id)
        return record is not None and record.state is not ActivationState.PENDING

    await wait_for(done, 30, f"final record of {activation_id}")
    return observer.records[activation_id]


async def signed_trigger(broker: MosquittoProcess, topics: Topics, key: Path) -> ActivationRecord:
    """`trigger-mesh trigger --signing-key` (the in-car terminal): the final record."""
    trigger = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "trigger", "--kind", TriggerKind.WEAPON_DRAW.value,
        "--unit", UNIT, "--broker", f"mqtt://127.0.0.1:{broker.port}",
        "--prefix", topics.prefix, "--signing-key", str(key), "--json", "--timeout", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    out, err = await trigger.communicate()
    assert trigger.returncode == 0, out.decode() + err.decode()
    return ActivationRecord.model_validate_json(out.decode().strip().splitlines()[-1])


def forged_command(issuer: str) -> bytes:
    """An unsigned record_start in a gateway's name, for unit car-7."""
    now = time.time_ns()
    return json.dumps({
        "type": "record_start", "v": 2, "activation_id": "a-forged", "issuer": issuer,
        "trigger": {"event_id": "f", "kind": "manual", "unit_id": UNIT,
                    "source": {"type": "manual", "id": "x", "authenticated": False},
                    "observed_at_ns": str(now)},
        "issued_at_ns": str(now), "origin": None, "radius_m": 0, "pre_event_s": 0,
        "targets": {"units": ["car-7"], "cameras": []}, "expires_at_ns": str(now + 30 * 10**9),
    }).encode()  # fmt: skip


def jws(payload: dict[str, Any], key_file: Path) -> bytes:
    """A signed message as docs/security.md writes it (here: a cancel by the in-car terminal)."""
    key = load_pem_private_key(key_file.read_bytes(), None)
    raw = key.public_key().public_bytes_raw().hex().encode()  # type: ignore[union-attr]
    kid = hashlib.sha256(raw).hexdigest()[:16]

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "EdDSA", "kid": kid, "typ": "trigger-mesh+json"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = b64(key.sign(f"{head}.{body}".encode()))  # type: ignore[call-arg,union-attr]
    return json.dumps({"protected": head, "payload": body, "signature": signature}).encode()


def unwrap(message: bytes) -> dict[str, Any]:
    outer: dict[str, Any] = json.loads(message)
    if "signature" in outer:
        padded = outer["payload"] + "=" * (-len(outer["payload"]) % 4)
        return json.loads(base64.urlsafe_b64decode(padded))  # type: ignore[no-any-return]
    return outer


# --- the tests -----------------------------------------------------------------------------------
def test_the_node_camera_reaches_every_verdict_of_the_vectors(node: str) -> None:
    """node --test: cells.json, range.json, signed.json, and the camera's rules."""
    result = subprocess.run(
        [node, "--test"], cwd=NODE_CAMERA, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout


async def test_node_camera_starts_in_range_and_is_silent_out_of_range(
    node: str, mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gateway_id = f"gw-node-{uuid.uuid4().hex[:6]}"
    near = node_camera(node, mosquitto, topics, "node-near", "car-7", NEAR)
    far = node_camera(node, mosquitto, topics, "node-far", "car-40", FAR)
    runner = gateway(tmp_path, mosquitto, topics, gateway_id)
    async with scene(mosquitto, topics, runner, gateway_id, [near, far]) as (obs, sender, wire):
        event = sender.event("node")
        await sender.publish(event)
        await wait_for(lambda: event.event_id in obs.receipts, 20, "receipt")
        activation_id = obs.receipts[event.event_id].activation_id
        assert activation_id is not None
        record = await final_record(obs, activation_id)
        assert record.state is ActivationState.CONFIRMED, record
        cameras = {c.camera_id: c for c in record.cameras}
        assert cameras["node-near"].expected
        assert cameras["node-near"].status is OutcomeStatus.STARTED
        assert cameras["node-near"].attempts == 1  # heard on its cell's topic: no retry
        assert "node-far" not in cameras
        started = await near.wait_for("started", activation_id)
        assert started["lane"] == "cell"
        # The far camera heard the command on the same cell and said nothing.
        ignored = await far.wait_for("ignored", activation_id)
        assert ignored["reason"].startswith("not concerned: out of range: 250.0 m")
        assert wire.on(f"{topics.prefix}/ack/{gateway_id}/node-far") == []
        (ack,) = [unwrap(m) for m in wire.on(f"{topics.prefix}/ack/{gateway_id}/node-near")]
        assert ack["v"] == 2
        assert isinstance(ack["received_at_ns"], str)
        assert isinstance(ack["recording_started_at_ns"], str)
        # Killed without a goodbye: the broker publishes its last will (offline).
        near.process.kill()
        presence = topics.presence("node-near")
        await wait_for(
            lambda: any(not json.loads(m)["online"] for m in wire.on(presence) if m), 30, "will"
        )


async def test_node_camera_in_a_signed_fleet_signs_acks_and_obeys_a_signed_cancel(
    node: str, mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    gateway_id = f"gw-node-{uuid.uuid4().hex[:6]}"
    trust = make_keys(tmp_path, ("gateway", gateway_id), ("camera", "node-s1"))
    key = tmp_path / "keys" / f"{gateway_id}.key"
    camera = node_camera(
        node, mosquitto, topics, "node-s1", "car-7", NEAR,
        "--key", str(tmp_path / "keys" / "node-s1.key"), "--trust", str(trust),
    )  # fmt: skip
    runner = gateway(tmp_path, mosquitto, topics, gateway_id, trust)
    async with scene(mosquitto, topics, runner, gateway_id, [camera]) as (obs, sender, wire):
        # An unsigned command in the gateway's name: refused, with a signed `rejected` ack.
        await sender.link.publish(f"{topics.prefix}/cmd/camera/node-s1", forged_command(gateway_id))
        refused = await camera.wait_for("rejected", "a-forged")
        assert refused["reason"].startswith("unsigned: ")
        # A trigger signed by the in-car terminal (the gateway's key): the camera starts, and
        # the gateway takes its signed ack.
        record = await signed_trigger(mosquitto, topics, key)
        assert record.state is ActivationState.CONFIRMED, record
        assert [(c.camera_id, c.status, c.expected) for c in record.cameras] == [
            ("node-s1", OutcomeStatus.STARTED, True)
        ]
        acks = wire.on(f"{topics.prefix}/ack/{gateway_id}/node-s1")
        assert acks
        assert all("signature" in json.loads(m) for m in acks)
        # A cancel from the in-car terminal, in the window: the gateway sends a signed
        # record_cancel, the camera stops and answers a signed cancel_ack.
        cancel = {
            "type": "cancel", "v": 2, "cancel_id": f"c-{uuid.uuid4().hex[:12]}",
            "activation_id": record.activation_id, "unit_id": UNIT, "by": "officer:test",
            "reason": "holster bumped", "at_ns": str(time.time_ns()),
        }  # fmt: skip
        await sender.link.publish(f"{topics.prefix}/cancel/{UNIT}", jws(cancel, key))
        await wait_for(lambda: cancel["cancel_id"] in obs.receipts, 20, "cancel receipt")
        assert obs.receipts[cancel["cancel_id"]].outcome.value == "accepted"
        stopped = await camera.wait_for("cancel_stopped", record.activation_id)
        assert stopped["type"] == "record_cancel"
        await wait_for(
            lambda: any(unwrap(m)["type"] == "cancel_ack" for m in wire.on(
                f"{topics.prefix}/ack/{gateway_id}/node-s1")), 10, "cancel_ack",
        )  # fmt: skip
        await wait_for(
            lambda: obs.records[record.activation_id].state is ActivationState.CANCELLED,
            10,
            "cancelled record",
        )
