"""`recording verify`'s check (mesh/camera/recording/verify.py) on hostile input: arbitrary
bytes as manifest.json, arbitrary JSON signed by a trusted camera key, and valid manifests
(generated from the model's JSON schema) against arbitrary directory contents. It always
returns a report, never raises; a report with findings is never intact, and each finding
names a segment the manifest has (docs/fuzzing.md)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from mesh.camera.recording.manifest import RecordingManifest
from mesh.camera.recording.verify import FileFacts, FindingKind, Verdict, check_recording
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from tests.fuzz_helpers import batch, budget, instances, json_values

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz camera").digest())
SIGNER = PayloadSigner(KEY)
TRUST = TrustStore([trusted_key(KEY.public_key(), KeyRole.CAMERA, "bwc-12a")])

facts = st.builds(
    FileFacts,
    st.integers(0, 2**40),
    st.sampled_from([hashlib.sha256(bytes([i])).hexdigest() for i in range(4)]),
)
names = st.sampled_from(["0000000000.ts", "0000000001.ts", "0000000002.ts", "x.ts", "notes"])
directories = st.dictionaries(names, facts, max_size=5)


def checked(manifest: bytes, files: dict[str, FileFacts]) -> None:
    for trust in (None, TRUST):
        report = check_recording(manifest, files, trust=trust)
        report.as_dict()  # what --json prints
        report.summary()
        assert (report.verdict is Verdict.FAILED) == bool(report.findings)
        count = len(report.manifest.segments) if report.manifest else 0
        assert all(f.segment is None or 0 <= f.segment < count for f in report.findings)
        if trust is None:
            assert report.verdict is not Verdict.INTACT


@budget(50)
@given(batch(st.binary(max_size=200), 20), directories)
def test_arbitrary_bytes_are_an_invalid_manifest(
    blobs: list[bytes], files: dict[str, FileFacts]
) -> None:
    for blob in blobs:
        report = check_recording(blob, files, trust=TRUST)
        assert FindingKind.MANIFEST_INVALID in {f.kind for f in report.findings}


@budget(50)
@given(batch(json_values, 10), directories)
def test_arbitrary_signed_json_is_checked_without_raising(
    values: list[Any], files: dict[str, FileFacts]
) -> None:
    for value in values:
        checked(SIGNER.seal_bytes(json.dumps(value).encode()).to_bytes(), files)


@budget(100)
@given(instances(RecordingManifest), directories)
def test_valid_manifests_against_any_directory(
    manifest: dict[str, Any], files: dict[str, FileFacts]
) -> None:
    payload = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    checked(SIGNER.seal_bytes(payload.encode()).to_bytes(), files)
