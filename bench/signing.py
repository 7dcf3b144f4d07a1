"""What security costs on an activation's path, against a bare MQTT round trip.

1. floor: a QoS1 publish to our own subscription, on loopback mosquitto, plain and over
   TLS with client certificates (the broker `broker-config` writes, with its ACL);
2. the four signature steps one camera adds: the gateway signs the command, the camera
   checks it, signs its ack, the gateway checks the ack. Protocol v2: each step includes
   what the wire needs (serialising and JWS-wrapping the payload; verifying, then parsing
   it), and the same steps unsigned (serialise; parse) are timed beside them, so the
   signatures' own cost is the difference.

    python bench/signing.py [--json] [--rounds 2000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.config import write_broker_config
from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.mqtt.urls import BrokerUrl
from mesh.decide.stats import percentile
from mesh.ops import logs
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    GeoPoint,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from triggers.manual import manual_trigger

SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {q: round(percentile(ms, p), 4) for q, p in (("p50", 50), ("p99", 99))}


async def round_trips(url: BrokerUrl, topic: str, rounds: int) -> dict[str, float]:
    arrived: asyncio.Queue[None] = asyncio.Queue()

    def on_message(_m: Inbound) -> None:
        arrived.put_nowait(None)

    link = MqttLink(
        url,
        LinkOptions(
            f"bench-{uuid.uuid4().hex[:6]}", subscriptions=((topic, 1),), persistent_session=False
        ),
    )
    task = asyncio.create_task(link.run(on_message))
    try:
        await link.wait_up(10)
        samples = []
        for i in range(rounds + 50):
            start = time.perf_counter()
            await link.publish(topic, b'{"n":%d}' % i, qos=1)
            await arrived.get()
            if i >= 50:  # warm-up
                samples.append(time.perf_counter() - start)
        return summary_ms(samples)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def crypto_steps(rounds: int) -> dict[str, dict[str, float]]:
    gateway, camera = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust = TrustStore(
        [
            trusted_key(gateway.public_key(), KeyRole.GATEWAY, "gw-car-12"),
            trusted_key(camera.public_key(), KeyRole.CAMERA, "bwc-12a"),
        ]
    )
    gw = Security(signer=PayloadSigner(gateway), trust=trust)
    cam = Security(signer=PayloadSigner(camera), trust=trust)
    now = time.time_ns()
    event = manual_trigger(TriggerKind.WEAPON_DRAW, "car-12", source_id="bench")
    command = RecordStart(
        activation_id="a-bench",
        issuer="gw-car-12",
        trigger=TriggerSummary.of(event),
        issued_at_ns=now,
        origin=GeoPoint(lat=39.95, lon=-75.16),
        radius_m=150.0,
        pre_event_s=30,
        targets=Targets(units=("car-12",)),
        expires_at_ns=now + 30 * 10**9,
    )
    ack = CameraAck(
        activation_id="a-bench", camera_id="bwc-12a", status=AckStatus.STARTED, received_at_ns=now
    )
    signed_command, signed_ack = gw.seal(command), cam.seal(ack)
    plain = Security()
    plain_command, plain_ack = plain.seal(command), plain.seal(ack)
    steps: dict[str, Callable[[], object]] = {
        "gateway_signs_command": lambda: gw.seal(command),
        "camera_checks_command": lambda: cam.check_command(
            cam.open(RecordStart, signed_command), now
        ),
        "camera_signs_ack": lambda: cam.seal(ack),
        "gateway_checks_ack": lambda: gw.check_ack(gw.open(CameraAck, signed_ack), now),
        # The same four steps without signatures: what the wire costs anyway.
        "unsigned_gateway_encodes_command": lambda: plain.seal(command),
        "unsigned_camera_reads_command": lambda: plain.open(RecordStart, plain_command),
        "unsigned_camera_encodes_ack": lambda: plain.seal(ack),
        "unsigned_gateway_reads_ack": lambda: plain.open(CameraAck, plain_ack),
    }
    out = {}
    for name, step in steps.items():
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            step()
            samples.append(time.perf_counter() - start)
        out[name] = summary_ms(samples)
    return out


async def run(rounds: int) -> dict[str, Any]:
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (apt-get install -y mosquitto)")
    with tempfile.TemporaryDirectory(prefix="bench-signing-") as tmp:
        plain = MosquittoProcess(binary, free_port(), Path(tmp) / "plain")
        spec = FleetSpec(gateways=(Principal("gw-car-12", "car-12"),))
        bundle = write_broker_config(
            Path(tmp) / "secure", spec, port=free_port(), bind="127.0.0.1", run_as="root"
        )
        secure = MosquittoProcess(binary, bundle.port, Path(tmp) / "secure", config=bundle.conf)
        plain.start()
        secure.start()
        try:
            floor = await round_trips(plain.url, "bench/rt", rounds)
            # The gateway's own status topic: one it may both publish and read.
            tls = await round_trips(
                bundle.url_for("gw-car-12"), "mesh/v2/gateway/gw-car-12", rounds
            )
        finally:
            plain.stop()
            secure.stop()
    steps = crypto_steps(rounds)
    signed_p50 = sum(s["p50"] for n, s in steps.items() if not n.startswith("unsigned_"))
    unsigned_p50 = sum(s["p50"] for n, s in steps.items() if n.startswith("unsigned_"))
    added_p50 = round(signed_p50 - unsigned_p50, 4)
    return {
        "bench": "signing",
        "rounds": rounds,
        "floor_round_trip_ms": floor,
        "tls_acl_round_trip_ms": tls,
        "steps_ms": steps,
        "signed_steps_p50_ms": round(signed_p50, 4),
        "unsigned_steps_p50_ms": round(unsigned_p50, 4),
        "signatures_per_camera_p50_ms": added_p50,
        "signatures_vs_floor_p50": round(added_p50 / floor["p50"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 50
    logs.configure("console", "warning")
    report = asyncio.run(run(args.rounds))
    print(
        f"floor: QoS1 round trip, plain      p50 {report['floor_round_trip_ms']['p50']} ms, "
        f"p99 {report['floor_round_trip_ms']['p99']} ms"
    )
    print(
        f"       QoS1 round trip, TLS + ACL  p50 {report['tls_acl_round_trip_ms']['p50']} ms, "
        f"p99 {report['tls_acl_round_trip_ms']['p99']} ms"
    )
    for name, figures in report["steps_ms"].items():
        print(f"{name:24} p50 {figures['p50']} ms, p99 {figures['p99']} ms")
    print(
        f"four steps signed p50 {report['signed_steps_p50_ms']} ms, unsigned "
        f"{report['unsigned_steps_p50_ms']} ms: signatures add "
        f"{report['signatures_per_camera_p50_ms']} ms per camera = "
        f"{report['signatures_vs_floor_p50']} x the plain round trip"
    )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
