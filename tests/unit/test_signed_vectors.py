"""docs/vectors/signed.json: the committed signed messages are what the code writes; the
real receivers (a camera agent, a gateway's ack check) reach every stated verdict; and an
independent JOSE implementation (joserfc) verifies every accepted message with the
published public key, and signs messages our receiver accepts."""

from __future__ import annotations

import base64
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from joserfc import jws as jose_jws
from joserfc.jwk import OKPKey

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import SimulatedRecorder
from mesh.clock import NS
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import AckStatus, CameraAck, CameraRole, RecordingMessage, RecordStart
from mesh.security.checks import Received, Security
from mesh.security.trust import TrustStore
from mesh.security.vectors import signed_vectors

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "vectors" / "signed.json").read_text()
)
NOW = int(VECTORS["now_ns"])
CASES = VECTORS["cases"]


def test_the_committed_signed_vectors_are_what_the_code_writes() -> None:
    """Regenerate with `trigger-mesh vectors --out docs/vectors` (`make schema`)."""
    assert json.loads(json.dumps(signed_vectors())) == VECTORS


@pytest.fixture
def trust(tmp_path: Path) -> TrustStore:
    """The vectors' trust store, read as a device reads its file."""
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(VECTORS["trust_store"]))
    return TrustStore.load(path)


@dataclass
class _Clock:
    now: int = NOW

    def wall_ns(self) -> int:
        return self.now

    def mono_ns(self) -> int:
        return self.now


@dataclass
class _Link:
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def publish_soon(self, topic: str, payload: bytes, **_: Any) -> None:
        self.sent.append((topic, payload))


def _camera(trust: TrustStore) -> CameraAgent:
    agent = CameraAgent(
        CameraIdentity("bwc-12a", "car-12", CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=Topics("t/mesh/v2"),
        position=None,
        clock=_Clock(),
        recorder=SimulatedRecorder(powered_on_ns=NOW - 600 * NS),
        security=Security(
            trust=trust,
            max_clock_skew_s=VECTORS["max_clock_skew_s"],
            max_command_validity_s=VECTORS["max_command_validity_s"],
        ),
    )
    agent.link = _Link()  # type: ignore[assignment]
    return agent


async def _camera_verdict(agent: CameraAgent, message: bytes) -> str:
    """What the camera concludes, read from what it does: an exception before parsing,
    its ack's status and reason after. The camera of the vectors has no position fix, so
    only a command naming its unit concerns it."""
    try:
        received = agent.security.open(RecordStart, message)
    except PayloadError as exc:
        return f"drop:{exc.code}"
    ack = await agent.handle(received, direct=True, received_ns=NOW)
    assert ack is not None  # on its own topic a camera always answers
    if ack.status is AckStatus.REJECTED:
        code = ack.reason.split(":")[0]
        return "refuse:expired" if code.startswith("command expired") else f"refuse:{code}"
    return "accept"  # then decided: started, already recording, or out of range


def _gateway_verdict(trust: TrustStore, message: bytes) -> str:
    security = Security(trust=trust)
    received: Received[CameraAck] | Received[RecordingMessage]
    try:
        payload, _, _ = security.unwrap(message)
        if b'"type":"recording"' in payload:
            received = security.open(RecordingMessage, message)
        else:
            received = security.open(CameraAck, message)
    except PayloadError as exc:
        return f"drop:{exc.code}"
    problem = security.check_ack(received, NOW)
    return "accept" if problem is None else f"refuse:{problem.code}"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_each_verdict_is_what_the_receiver_concludes(
    case: dict[str, Any], trust: TrustStore
) -> None:
    camera = _camera(trust)
    got = []
    for text in case["messages"]:
        message = text.encode()
        if case["receiver"] == "camera":
            got.append(await _camera_verdict(camera, message))
        else:
            got.append(_gateway_verdict(trust, message))
    assert got == case["verdicts"]


def _public_jwk(name: str) -> OKPKey:
    entry = next(k for k in VECTORS["keys"] if k["name"] == name)
    x = base64.urlsafe_b64encode(bytes.fromhex(entry["public_key"])).rstrip(b"=").decode()
    return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": x})


def _signer_of(kid: str) -> str:
    return next(k["name"] for k in VECTORS["keys"] if k["key_id"] == kid)


@pytest.mark.parametrize(
    "case", [c for c in CASES if "accept" in c["verdicts"]], ids=lambda c: c["name"]
)
def test_an_independent_jose_library_verifies_what_is_accepted(case: dict[str, Any]) -> None:
    message = json.loads(case["messages"][0])
    header = json.loads(base64.urlsafe_b64decode(message["protected"] + "=="))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that RFC 9864 deprecates "EdDSA"
        verified = jose_jws.deserialize_json(
            message, _public_jwk(_signer_of(header["kid"])), algorithms=[header["alg"]]
        )
    assert verified.payload == base64.urlsafe_b64decode(message["payload"] + "==")


def test_a_message_signed_by_an_independent_jose_library_is_accepted(trust: TrustStore) -> None:
    """The other way: joserfc signs (EdDSA, and RFC 9864's Ed25519), our receiver verifies."""
    seed = bytes.fromhex(next(k["seed"] for k in VECTORS["keys"] if k["name"] == "camera bwc-12a"))
    public = next(k for k in VECTORS["keys"] if k["name"] == "camera bwc-12a")
    d = base64.urlsafe_b64encode(seed).rstrip(b"=").decode()
    x = base64.urlsafe_b64encode(bytes.fromhex(public["public_key"])).rstrip(b"=").decode()
    private = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": x, "d": d})
    payload = (
        b'{"type":"ack","v":2,"activation_id":"a-1","camera_id":"bwc-12a",'
        b'"status":"started","received_at_ns":"' + str(NOW).encode() + b'"}'
    )
    for alg in ("EdDSA", "Ed25519"):
        header = {"alg": alg, "kid": public["key_id"], "typ": "trigger-mesh+json"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signed = jose_jws.serialize_json(
                {"protected": header}, payload, private, algorithms=[alg]
            )
        verdict = _gateway_verdict(trust, json.dumps(signed).encode())
        assert verdict == "accept", alg
        assert decode(CameraAck, payload).camera_id == "bwc-12a"
