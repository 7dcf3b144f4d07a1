"""A command flood, as issue 15 found it: a gateway's broker credential without its signing
key publishing badly signed record-starts on one topic as fast as it can (QoS 1).

The flood is published by ``mosquitto_pub -l`` (one message per line of a file) in its own
process, so that it costs the camera under test only what it costs to receive it; it
reaches about 10,000 commands a second on loopback.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bridge.mqtt.urls import BrokerUrl
from mesh.protocol.jws import Jws, b64url, protected_header
from tests.conftest import IN_CI


def flood_file(path: Path, count: int, issuer: str, key_id: str) -> Path:
    """``count`` record-starts in ``issuer``'s name under its real key id, one per line:
    a huge circle, valid for 30 s, each with its own activation id, as JWS messages whose
    protected header names the real key and whose signature is 86 characters of random
    base64url (each costs the camera a full Ed25519 check)."""
    now = time.time_ns()
    head = {
        "type": "record_start",
        "v": 2,
        "issuer": issuer,
        "trigger": {
            "event_id": "flood",
            "kind": "weapon_draw",
            "source": {"type": "manual", "id": "flood", "authenticated": False},
            "unit_id": "car-7",
            "observed_at_ns": str(now),
        },
        "issued_at_ns": str(now),
        "origin": {"lat": 39.952583, "lon": -75.165222},
        "radius_m": 5000.0,
        "pre_event_s": 30,
        "targets": {"units": [], "cameras": []},
        "expires_at_ns": str(now + 30 * 10**9),
    }
    protected = protected_header(key_id)
    with path.open("w") as out:
        for i in range(count):
            payload = json.dumps(dict(head, activation_id=f"a-flood-{i}")).encode()
            forged = Jws(protected, b64url(payload), secrets.token_urlsafe(64)[:86], key_id)
            out.write(forged.to_json() + "\n")
    return path


def mosquitto_pub() -> str:
    found = shutil.which("mosquitto_pub")
    if found is None:
        message = "mosquitto_pub is not installed (apt-get install -y mosquitto-clients)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def start_flood(url: BrokerUrl, topic: str, lines: Path) -> subprocess.Popen[bytes]:
    """Publish every line of ``lines`` to ``topic`` at QoS 1, from another process."""
    return subprocess.Popen(
        [mosquitto_pub(), "-h", url.host, "-p", str(url.port), "-q", "1", "-t", topic, "-l"],
        stdin=lines.open("rb"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
