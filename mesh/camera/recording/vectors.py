"""Test vectors of recording manifests (docs/vectors/recording-manifest.json): a fixed
camera key, a recording of four tiny "segments" (ASCII text, so anyone can hash them), its
manifest's canonical bytes, the signed ``manifest.json`` and its hash, and what a verifier
must conclude of each tampered copy.

Ed25519 is deterministic: ``trigger-mesh vectors`` writes the same file every time, and
``tests/unit/test_manifest_vectors.py`` checks the committed file against this code,
against the verifier, and against an independent JOSE implementation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.camera.recording.base import Recording, SegmentFile, StopReason
from mesh.camera.recording.manifest import (
    DeviceInfo,
    build_manifest,
    canonical_bytes,
    manifest_sha256,
    signed_bytes,
)
from mesh.camera.recording.verify import FileFacts, check_recording
from mesh.clock import NS
from mesh.protocol.jws import Jws, b64url, parse
from mesh.security.keys import public_key_hex
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from mesh.security.vectors import NOW_NS
from mesh.security.vectors import SEEDS as SIGNED_SEEDS

# The camera's key is signed.json's (RFC 8032 §7.1 test 2); another camera's and the
# gateway's are made here and there.
SEEDS: dict[str, str] = {
    "camera bwc-12a": SIGNED_SEEDS["camera bwc-12a"],
    "camera bwc-7a": hashlib.sha256(b"trigger-mesh vectors: camera bwc-7a").hexdigest(),
    "gateway gw-car-12": SIGNED_SEEDS["gateway gw-car-12"],
    "stranger": SIGNED_SEEDS["stranger"],
}
_SUBJECTS = {
    "camera bwc-12a": (KeyRole.CAMERA, "bwc-12a"),
    "camera bwc-7a": (KeyRole.CAMERA, "bwc-7a"),
    "gateway gw-car-12": (KeyRole.GATEWAY, "gw-car-12"),
}
PERIOD_NS = 40_000_000  # 25 frames a second
FIRST_NS = NOW_NS - 60 * NS


def private_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEEDS[name]))


def trust_store() -> TrustStore:
    return TrustStore(
        trusted_key(private_key(name).public_key(), role, subject)
        for name, (role, subject) in _SUBJECTS.items()
    )


def segment_text(index: int) -> str:
    """The vectors' stand-in for a segment file's bytes (ASCII)."""
    return f"segment {index} of recording r-vectors-1\n" * (index + 1)


def recording(count: int = 4, *, skip: int | None = None) -> Recording:
    segments = []
    for index in range(count):
        if index == skip:
            continue
        data = segment_text(index).encode()
        first = FIRST_NS + index * NS
        segments.append(
            SegmentFile(
                name=f"{index:010d}.ts",
                first_frame_ns=first,
                last_frame_ns=first + 24 * PERIOD_NS,
                frames=25,
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return Recording(
        recording_id="r-vectors-1",
        camera_id="bwc-12a",
        activations=["a-77fd793654b858c3"],
        command_at_ns=FIRST_NS + 2 * NS + 3_000_000,
        started_at_ns=FIRST_NS + 2 * NS + PERIOD_NS,
        first_frame_ns=FIRST_NS,
        pre_event_kept_s=2.04,
        segments=segments,
        stopped_at_ns=FIRST_NS + count * NS,
        stop_reason=StopReason.OFFICER,
        stop_note="suspect detained, scene clear — «fin»",
    )


DEVICE = DeviceInfo.of(model="Acme DC-4", serial="SN-0042", source="rtsp://10.0.0.5/stream1")


def manifest_json(signer: str = "camera bwc-12a", rec: Recording | None = None) -> str:
    manifest = build_manifest(rec or recording(), DEVICE)
    return signed_bytes(manifest, PayloadSigner(private_key(signer))).decode("ascii")


def _files(count: int = 4) -> dict[str, str]:
    return {f"{i:010d}.ts": segment_text(i) for i in range(count)}


@dataclass(frozen=True)
class Case:
    name: str
    manifest_json: str
    files: dict[str, str]
    findings: list[tuple[str, int | None]]  # what a verifier must report, in order
    why: str


def _edited_manifest() -> str:
    jws = parse(manifest_json())
    payload = jws.payload_bytes.replace(b'"stop_reason":"officer"', b'"stop_reason":"cancel"')
    return Jws(jws.protected, b64url(payload), jws.signature, jws.kid).to_json()


def cases() -> list[Case]:
    genuine, files = manifest_json(), _files()
    swapped = {**files, "0000000001.ts": files["0000000002.ts"]}
    swapped["0000000002.ts"] = files["0000000001.ts"]
    edited = {**files, "0000000002.ts": files["0000000002.ts"].replace("2", "7", 1)}
    removed = {k: v for k, v in files.items() if k != "0000000001.ts"}
    extra = {**files, "0000000004.ts": segment_text(4)}
    return [
        Case("intact", genuine, files, [], "every file as listed, signed by the camera's key"),
        Case(
            "a segment edited",
            genuine,
            edited,
            [("edited", 2)],
            "one character changed: its hash differs",
        ),
        Case(
            "a segment removed",
            genuine,
            removed,
            [("removed", 1)],
            "its name is missing, its content nowhere",
        ),
        Case(
            "two segments swapped",
            genuine,
            swapped,
            [("reordered", 1)],
            "each name holds the other's content: one finding, at the first of the pair",
        ),
        Case(
            "a segment inserted",
            genuine,
            extra,
            [("extra", None)],
            "a media file the manifest does not list",
        ),
        Case(
            "a non-media file inserted",
            genuine,
            {**files, "0000000004.ts.part": segment_text(4)},
            [("extra", None)],
            "any regular file the manifest does not list is extra, whatever its name, but "
            "recording.json, segments.jsonl and .manifest.json.* (the writer's temporary files)",
        ),
        Case(
            "the manifest edited",
            _edited_manifest(),
            files,
            [("bad_signature", None)],
            "stop_reason officer rewritten as cancel, the signature kept",
        ),
        Case(
            "signed by another camera's key",
            manifest_json("camera bwc-7a"),
            files,
            [("wrong_signer", None)],
            "a key of the trust store, but camera bwc-7a's",
        ),
        Case(
            "signed by an unknown key",
            manifest_json("stranger"),
            files,
            [("unknown_key", None)],
            "no trust store holds it",
        ),
        Case(
            "a gap the camera recorded",
            manifest_json(rec=recording(skip=2)),
            {k: v for k, v in files.items() if k != "0000000002.ts"},
            [("name_sequence", 2), ("gap", 2)],
            "the camera's own manifest lacks segment 2: 1.040 s without video, names skip",
        ),
    ]


def findings_of(
    case_files: dict[str, str], manifest: str, trust: TrustStore
) -> list[tuple[str, int | None]]:
    """What the verifier reports of a case (the tests compare it with the stated findings)."""
    facts = {
        name: FileFacts(len(text.encode()), hashlib.sha256(text.encode()).hexdigest())
        for name, text in case_files.items()
    }
    report = check_recording(manifest.encode("ascii"), facts, trust=trust)
    return [(f.kind.value, f.segment) for f in report.findings]


def manifest_vectors() -> dict[str, object]:
    store = trust_store()
    manifest = build_manifest(recording(), DEVICE)
    genuine = manifest_json()
    return {
        "description": (
            "recording manifests (docs/security.md, 'Recording manifests'): the canonical "
            "bytes of a manifest, manifest.json as the camera writes it (a JWS of those "
            "bytes by its key), manifest_sha256 (SHA-256 of manifest.json's bytes), and "
            "what a verifier with trust_store concludes of each case: findings as "
            "[kind, segment index or null]; none means intact"
        ),
        "keys": [
            {
                "name": name,
                "seed": seed,
                "public_key": public_key_hex(private_key(name).public_key()),
                "key_id": PayloadSigner(private_key(name)).key_id,
            }
            for name, seed in SEEDS.items()
        ],
        "trust_store": store.document(),
        "manifest": json.loads(canonical_bytes(manifest)),
        "canonical": canonical_bytes(manifest).decode("utf-8"),
        "manifest_json": genuine,
        "manifest_sha256": manifest_sha256(genuine.encode("ascii")),
        "cases": [
            {
                "name": case.name,
                "manifest_json": case.manifest_json,
                "files": case.files,
                "findings": [list(f) for f in case.findings],
                "why": case.why,
            }
            for case in cases()
        ],
    }
