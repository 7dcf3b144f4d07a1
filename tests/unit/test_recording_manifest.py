"""The evidence manifest (mesh/camera/recording/manifest.py) and its verifier
(mesh/camera/recording/verify.py): the canonical signed form, and one finding per kind of
tampering, each named with the segment it concerns. The files here are facts (size,
SHA-256) as ``scan_directory`` reports them; tests/integration/test_recording_verify.py
does the same to real FFmpeg segments through the command line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from mesh.camera.recording.base import Recording, SegmentFile, StopReason
from mesh.camera.recording.manifest import (
    MANIFEST_FILE,
    DeviceInfo,
    build_manifest,
    canonical_bytes,
    manifest_schema,
    manifest_sha256,
    sign_manifest,
    signed_bytes,
    source_without_credentials,
    write_manifest,
)
from mesh.camera.recording.verify import (
    EntryKind,
    FileFacts,
    FindingKind,
    Verdict,
    VerifyReport,
    check_recording,
    scan_directory,
)
from mesh.cli.app import app
from mesh.protocol.jws import Jws, b64url, parse
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key

S = 1_000_000_000
T0 = 1_796_299_200 * S  # 2026-12-03T12:00:00Z
PERIOD = 40_000_000  # 25 fps
DEVICE = DeviceInfo.of(model="Acme DC-4", serial="SN-0042", source="testsrc2")


def content(index: int) -> bytes:
    return f"segment {index} ".encode() * (100 + index)


def segment(index: int, *, name: str | None = None, shift_ns: int = 0) -> SegmentFile:
    data = content(index)
    first = T0 + index * S + shift_ns
    return SegmentFile(
        name=name or f"{index:010d}.ts",
        first_frame_ns=first,
        last_frame_ns=first + 24 * PERIOD,
        frames=25,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def recording(segments: list[SegmentFile] | None = None, camera: str = "bwc-12a") -> Recording:
    return Recording(
        recording_id="r-20261203T120000Z-a1",
        camera_id=camera,
        activations=["a-77fd793654b858c3", "a-5d1c0e6f9b2a4c77"],
        command_at_ns=T0 + 2 * S + 5_000_000,
        started_at_ns=T0 + 2 * S + PERIOD,
        first_frame_ns=T0,
        pre_event_kept_s=2.04,
        segments=[segment(i) for i in range(5)] if segments is None else segments,
        stopped_at_ns=T0 + 5 * S,
        stop_reason=StopReason.OFFICER,
        stop_note="suspect in custody — «fin»",
    )


def files_of(rec: Recording) -> dict[str, FileFacts]:
    return {s.name: FileFacts(s.bytes, s.sha256) for s in rec.segments}


class Keys:
    def __init__(self) -> None:
        self.camera = Ed25519PrivateKey.generate()
        self.other_camera = Ed25519PrivateKey.generate()
        self.gateway = Ed25519PrivateKey.generate()
        self.stranger = Ed25519PrivateKey.generate()
        self.store = TrustStore(
            [
                trusted_key(self.camera.public_key(), KeyRole.CAMERA, "bwc-12a"),
                trusted_key(self.other_camera.public_key(), KeyRole.CAMERA, "bwc-7a"),
                trusted_key(self.gateway.public_key(), KeyRole.GATEWAY, "gw-car-12"),
            ]
        )

    def sign(self, rec: Recording, key: Ed25519PrivateKey | None = None) -> bytes:
        return signed_bytes(build_manifest(rec, DEVICE), PayloadSigner(key or self.camera))


@pytest.fixture
def keys() -> Keys:
    return Keys()


def kinds(report: VerifyReport) -> list[FindingKind]:
    return [f.kind for f in report.findings]


def only(report: VerifyReport, kind: FindingKind) -> list[str]:
    """The messages of the findings of ``kind``, which must be the only kind reported."""
    assert set(kinds(report)) == {kind}, [f.message for f in report.findings]
    assert report.verdict is Verdict.FAILED
    return [f.message for f in report.findings]


# --- the manifest -----------------------------------------------------------------------
def test_the_signed_payload_is_the_canonical_json_of_every_field(keys: Keys) -> None:
    rec = recording()
    manifest = build_manifest(rec, DEVICE)
    data = canonical_bytes(manifest)
    value = json.loads(data)
    # sorted members, no whitespace, UTF-8 (not \u escapes), times as decimal strings
    assert data == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert "«fin»".encode() in data
    assert value["type"] == "recording_manifest"
    assert value["version"] == 1
    assert value["camera_id"] == "bwc-12a"
    assert value["activations"] == rec.activations
    assert value["device"] == {"model": "Acme DC-4", "serial": "SN-0042", "source": "testsrc2"}
    assert value["command_at_ns"] == str(rec.command_at_ns)
    assert value["first_frame_ns"] == str(T0)
    assert value["pre_event_kept_ms"] == 2040
    assert value["stop_reason"] == "officer"
    assert value["stop_note"] == rec.stop_note
    assert [s["index"] for s in value["segments"]] == [0, 1, 2, 3, 4]
    assert value["segments"][3] == {
        "index": 3,
        "name": "0000000003.ts",
        "sha256": rec.segments[3].sha256,
        "bytes": rec.segments[3].bytes,
        "frames": 25,
        "first_frame_ns": str(T0 + 3 * S),
        "last_frame_ns": str(T0 + 3 * S + 24 * PERIOD),
    }
    assert set(value) == set(manifest_schema()["required"])
    # the JWS of exactly those bytes, by the camera's key, as acks are signed
    jws = parse(signed_bytes(manifest, PayloadSigner(keys.camera)))
    assert jws.payload_bytes == data
    assert jws.kid == PayloadSigner(keys.camera).key_id
    assert sign_manifest(manifest, PayloadSigner(keys.camera)).to_bytes() == signed_bytes(
        manifest, PayloadSigner(keys.camera)
    )  # Ed25519 is deterministic: the same manifest, the same bytes and hash


def test_write_manifest_writes_the_signed_bytes_whose_hash_it_returns(
    keys: Keys, tmp_path: Path
) -> None:
    rec = replace(recording(), directory=tmp_path)
    path, digest = write_manifest(rec, DEVICE, PayloadSigner(keys.camera))
    assert path == tmp_path / MANIFEST_FILE
    assert path.read_bytes() == keys.sign(rec)
    assert (
        digest
        == manifest_sha256(path.read_bytes())
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]  # no temporary left


def test_no_manifest_for_a_recording_still_running() -> None:
    with pytest.raises(ValueError, match="has not stopped"):
        build_manifest(replace(recording(), stopped_at_ns=None, stop_reason=None), DEVICE)


def test_a_long_or_broken_text_never_keeps_the_manifest_from_being_written(keys: Keys) -> None:
    rec = replace(recording(), stop_note="x" * 5000 + "\udc80", pre_event_kept_s=float("nan"))
    manifest = build_manifest(rec, DeviceInfo.of(model="m" * 300, serial="bad \ud800 serial"))
    assert len(manifest.stop_note) == 1024
    assert manifest.stop_note.endswith("x…")
    assert manifest.device.model == "m" * 255 + "…"
    assert manifest.device.serial == "bad \ufffd serial"
    assert manifest.pre_event_kept_ms == 0
    data = keys.sign(rec)
    assert check_recording(data, files_of(rec), trust=keys.store).verdict is Verdict.INTACT


def test_the_device_source_never_carries_credentials() -> None:
    assert (
        source_without_credentials("rtsp://admin:hunter2@10.0.0.5:554/stream1?channel=1")
        == "rtsp://10.0.0.5:554/stream1?channel=1"
    )
    assert (
        source_without_credentials("rtsp://10.0.0.5/live?token=abc&profile=hi&Password=x")
        == "rtsp://10.0.0.5/live?profile=hi"
    )
    assert source_without_credentials("/dev/video0") == "/dev/video0"
    assert DeviceInfo.of(source="rtsp://u:p@cam/x").source == "rtsp://cam/x"


# --- verdicts -----------------------------------------------------------------------------
def test_intact_only_against_the_trusted_camera_key(keys: Keys) -> None:
    rec = recording()
    report = check_recording(keys.sign(rec), files_of(rec), trust=keys.store)
    assert report.findings == []
    assert report.verdict is Verdict.INTACT
    assert report.summary().startswith("intact: recording r-20261203T120000Z-a1 of camera")
    assert report.signature_line().startswith("signature: good, by camera bwc-12a's key")
    assert report.frame_period_ns == PERIOD
    assert report.manifest_sha256 == hashlib.sha256(keys.sign(rec)).hexdigest()


def test_without_a_trust_store_the_signature_is_not_checked_and_never_intact(
    keys: Keys,
) -> None:
    rec = recording()
    # even a manifest signed by a stranger: nothing says whose key it is
    report = check_recording(keys.sign(rec, keys.stranger), files_of(rec))
    assert report.findings == []
    assert report.verdict is Verdict.UNVERIFIED
    assert "not checked against a trusted key" in report.summary()
    assert "not checked against a trusted key" in report.signature_line()
    # and when files are missing too, it still says the signature was not checked
    files = files_of(rec)
    del files["0000000000.ts"]
    failed = check_recording(keys.sign(rec, keys.stranger), files)
    assert failed.verdict is Verdict.FAILED
    assert "not checked against a trusted key" in failed.signature_line()
    assert "intact" not in report.summary()


# --- the files ----------------------------------------------------------------------------
def test_a_removed_segment_is_named(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    del files["0000000002.ts"]
    report = check_recording(keys.sign(rec), files, trust=keys.store)
    (message,) = only(report, FindingKind.REMOVED)
    assert "segment 2 (0000000002.ts) is missing: removed (0.960 s of video)" in message
    assert report.findings[0].segment == 2
    assert report.segment_status == {2: "removed"}


def test_an_edited_segment_is_named(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    edited = bytearray(content(3))
    edited[100] ^= 0xFF
    files["0000000003.ts"] = FileFacts(len(edited), hashlib.sha256(edited).hexdigest())
    (message,) = only(check_recording(keys.sign(rec), files, trust=keys.store), FindingKind.EDITED)
    assert message.startswith("segment 3 (0000000003.ts) was changed")


def test_a_truncated_segment_is_edited(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    cut = content(1)[:-10]
    files["0000000001.ts"] = FileFacts(len(cut), hashlib.sha256(cut).hexdigest())
    (message,) = only(check_recording(keys.sign(rec), files, trust=keys.store), FindingKind.EDITED)
    assert f"should be {len(content(1))} bytes" in message
    assert f"({len(cut)} bytes" in message


def test_a_swapped_pair_is_named_as_reordered(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    files["0000000001.ts"], files["0000000003.ts"] = files["0000000003.ts"], files["0000000001.ts"]
    report = check_recording(keys.sign(rec), files, trust=keys.store)
    messages = only(report, FindingKind.REORDERED)
    assert messages == [
        "segments 1 (0000000001.ts) and 3 (0000000003.ts) are swapped: each file holds the "
        "other's content"
    ]
    assert report.segment_status == {1: "reordered", 3: "reordered"}


def test_a_rotation_of_three_is_reordered_at_each(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    a, b, c = (files[f"000000000{i}.ts"] for i in (1, 2, 3))
    files["0000000001.ts"], files["0000000002.ts"], files["0000000003.ts"] = b, c, a
    report = check_recording(keys.sign(rec), files, trust=keys.store)
    messages = only(report, FindingKind.REORDERED)
    assert len(messages) == 3
    assert "0000000001.ts (segment 1) holds segment 2's content" in messages[0]


def test_a_segment_overwritten_by_a_copy_of_another_is_edited(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    files["0000000002.ts"] = files["0000000001.ts"]
    (message,) = only(check_recording(keys.sign(rec), files, trust=keys.store), FindingKind.EDITED)
    assert "holds a copy of segment 1's content (0000000001.ts)" in message


def test_a_renamed_segment_is_moved(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    files["evidence-copy.bin"] = files.pop("0000000004.ts")
    (message,) = only(check_recording(keys.sign(rec), files, trust=keys.store), FindingKind.MOVED)
    assert "segment 4 (0000000004.ts) is missing under its name" in message
    assert "evidence-copy.bin" in message


def test_every_unlisted_file_is_extra_but_the_recorders_metadata(keys: Keys) -> None:
    """Whatever its name: a media file, a copy of a segment, a `.part` or `~` leftover, a
    `.dat`, a note, a subdirectory or a FIFO. Only recording.json, segments.jsonl and the
    manifest writer's temporary files are left out (the last reported as ignored)."""
    rec = recording()
    files = files_of(rec)

    def facts(data: bytes) -> FileFacts:
        return FileFacts(len(data), hashlib.sha256(data).hexdigest())

    files["0000000002a.ts"] = facts(b"0123456789")
    files["0000000009.ts"] = files["0000000002.ts"]
    files["0000000007.ts.part"] = facts(b"partial")
    files["x.ts~"] = files["0000000001.ts"]
    files["clip.dat"] = facts(b"footage")
    files["notes.txt"] = facts(b"hi\n")
    files["sub"] = FileFacts(0, "", EntryKind.DIRECTORY)
    files["pipe"] = FileFacts(0, "", EntryKind.OTHER)
    files["recording.json"] = facts(b"{}")
    files["segments.jsonl"] = facts(b"")
    files[".manifest.json.k3j2_x"] = facts(b"half a manifest")
    report = check_recording(keys.sign(rec), files, trust=keys.store)
    assert report.verdict is Verdict.FAILED
    assert only(report, FindingKind.EXTRA) == [
        "0000000002a.ts is not in the manifest: an inserted or extra file (10 bytes the "
        "camera never listed)",
        "0000000007.ts.part is not in the manifest: an inserted or extra file (7 bytes the "
        "camera never listed)",
        "0000000009.ts is not in the manifest: an inserted or extra file (a copy of "
        "segment 2 (0000000002.ts))",
        "clip.dat is not in the manifest: an inserted or extra file (7 bytes the camera "
        "never listed)",
        "notes.txt is not in the manifest: an inserted or extra file (3 bytes the camera "
        "never listed)",
        "pipe is not in the manifest and not a regular file (an inserted or extra entry)",
        "sub/ is a subdirectory: a recording's directory holds none (an inserted or extra folder)",
        "x.ts~ is not in the manifest: an inserted or extra file (a copy of segment 1 "
        "(0000000001.ts))",
    ]
    assert report.unlisted == [".manifest.json.k3j2_x"]


@pytest.mark.parametrize("name", ["0000000007.ts.part", "x.ts~", "clip.dat", "README"])
def test_one_inserted_non_media_file_fails_the_verdict(keys: Keys, name: str) -> None:
    rec = recording()
    files = {**files_of(rec), name: FileFacts(5, hashlib.sha256(b"extra").hexdigest())}
    report = check_recording(keys.sign(rec), files, trust=keys.store)
    assert report.verdict is Verdict.FAILED
    assert [(f.kind, f.name) for f in report.findings] == [(FindingKind.EXTRA, name)]


def test_a_listed_segment_replaced_by_a_folder_is_edited(keys: Keys) -> None:
    rec = recording()
    files = {**files_of(rec), "0000000003.ts": FileFacts(0, "", EntryKind.DIRECTORY)}
    (message,) = only(check_recording(keys.sign(rec), files, trust=keys.store), FindingKind.EDITED)
    assert message.startswith("segment 3 (0000000003.ts) was changed: it should be a file of ")
    assert message.endswith("bytes, and is a directory")


# --- the manifest's order and times (as the camera signed them) ---------------------------
def test_a_gap_in_time_is_named(keys: Keys) -> None:
    # the camera lost 2 s of video between segments 2 and 3 (its own, signed, record)
    segments = [segment(i, shift_ns=2 * S if i >= 3 else 0) for i in range(5)]
    rec = recording(segments)
    report = check_recording(keys.sign(rec), files_of(rec), trust=keys.store)
    (message,) = only(report, FindingKind.GAP)
    assert message.startswith(
        "2.040 s between the last frame of segment 2 (0000000002.ts) and the first of "
        "segment 3 (0000000003.ts); at most 0.100 s"
    )


def test_one_frame_dropped_at_a_boundary_is_continuous(keys: Keys) -> None:
    segments = [segment(i, shift_ns=PERIOD if i >= 3 else 0) for i in range(5)]
    rec = recording(segments)
    assert check_recording(keys.sign(rec), files_of(rec), trust=keys.store).findings == []


def test_a_segment_without_frames_has_no_times_to_follow(keys: Keys) -> None:
    empty = SegmentFile("0000000005.ts", 0, 0, 0, 376, hashlib.sha256(b"pat").hexdigest())
    rec = recording([*(segment(i) for i in range(5)), empty])
    files = {**files_of(rec), "0000000005.ts": FileFacts(376, empty.sha256)}
    assert check_recording(keys.sign(rec), files, trust=keys.store).findings == []


def test_overlapping_segments_are_named(keys: Keys) -> None:
    segments = [segment(i, shift_ns=-S if i >= 3 else 0) for i in range(5)]
    rec = recording(segments)
    (message,) = only(
        check_recording(keys.sign(rec), files_of(rec), trust=keys.store), FindingKind.OVERLAP
    )
    assert "segment 3 (0000000003.ts) starts at or before the end of segment 2" in message


def test_names_out_of_sequence_are_named(keys: Keys) -> None:
    segments = [segment(i) for i in range(3)] + [segment(3, name="0000000005.ts")]
    rec = recording(segments)
    (message,) = only(
        check_recording(keys.sign(rec), files_of(rec), trust=keys.store),
        FindingKind.NAME_SEQUENCE,
    )
    assert "segment 3 is 0000000005.ts, after 0000000002.ts" in message


# --- the signature ----------------------------------------------------------------------
def tampered(data: bytes, edit: dict[str, object]) -> bytes:
    """The manifest's payload changed (canonically re-serialised), signature kept."""
    jws = parse(data)
    value = json.loads(jws.payload_bytes)
    value.update(edit)
    payload = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Jws(jws.protected, b64url(payload.encode()), jws.signature, jws.kid).to_bytes()


def test_a_tampered_manifest_fails_its_signature(keys: Keys) -> None:
    rec = recording()
    files = files_of(rec)
    del files["0000000002.ts"]
    # the editor drops the removed segment from the manifest too
    value = json.loads(parse(keys.sign(rec)).payload_bytes)
    segments = [s for s in value["segments"] if s["name"] != "0000000002.ts"]
    report = check_recording(
        tampered(keys.sign(rec), {"segments": segments}), files, trust=keys.store
    )
    assert FindingKind.BAD_SIGNATURE in kinds(report)
    assert "changed after the camera signed it" in report.findings[0].message
    assert report.verdict is Verdict.FAILED


def test_a_manifest_signed_by_another_cameras_key_is_refused(keys: Keys) -> None:
    rec = recording()
    report = check_recording(keys.sign(rec, keys.other_camera), files_of(rec), trust=keys.store)
    (message,) = only(report, FindingKind.WRONG_SIGNER)
    assert "signed by camera bwc-7a" in message
    assert "must be signed by camera bwc-12a" in message


def test_a_manifest_signed_by_a_gateway_or_an_unknown_key_is_refused(keys: Keys) -> None:
    rec = recording()
    gateway = check_recording(keys.sign(rec, keys.gateway), files_of(rec), trust=keys.store)
    assert only(gateway, FindingKind.WRONG_SIGNER)[0].startswith("signed by gateway gw-car-12")
    unknown = check_recording(keys.sign(rec, keys.stranger), files_of(rec), trust=keys.store)
    assert "signed by unknown key" in only(unknown, FindingKind.UNKNOWN_KEY)[0]


def test_a_revoked_key_is_refused_and_a_key_retired_later_is_not(keys: Keys) -> None:
    rec = recording()
    kid = PayloadSigner(keys.camera).key_id
    later = datetime.fromtimestamp(T0 / S + 3600, UTC)
    retired = TrustStore(keys.store.keys.values())
    retired.replace(retired.keys[kid].model_copy(update={"not_after": later}))
    # rotated an hour after the recording: its manifests still verify
    assert check_recording(keys.sign(rec), files_of(rec), trust=retired).verdict is Verdict.INTACT
    early = TrustStore(keys.store.keys.values())
    before = datetime.fromtimestamp(T0 / S - 3600, UTC)
    early.replace(early.keys[kid].model_copy(update={"not_after": before}))
    assert only(
        check_recording(keys.sign(rec), files_of(rec), trust=early), FindingKind.KEY_NOT_VALID
    )
    revoked = TrustStore(keys.store.keys.values())
    revoked.revoke(kid, later)
    (message,) = only(
        check_recording(keys.sign(rec), files_of(rec), trust=revoked), FindingKind.KEY_REVOKED
    )
    assert "no longer evidence" in message


def test_a_manifest_not_in_canonical_form_is_named(keys: Keys) -> None:
    rec = recording()
    value = json.loads(canonical_bytes(build_manifest(rec, DEVICE)))
    pretty = json.dumps(value, indent=2).encode()
    data = PayloadSigner(keys.camera).seal_bytes(pretty).to_bytes()
    only(check_recording(data, files_of(rec), trust=keys.store), FindingKind.NOT_CANONICAL)


def test_what_is_not_a_signed_manifest_is_invalid(keys: Keys) -> None:
    rec = recording()
    plain = canonical_bytes(build_manifest(rec, DEVICE))  # unsigned
    assert (
        "not a signed manifest"
        in only(
            check_recording(plain, files_of(rec), trust=keys.store), FindingKind.MANIFEST_INVALID
        )[0]
    )
    ack = PayloadSigner(keys.camera).seal_bytes(b'{"type":"ack","v":2}').to_bytes()
    assert (
        "not a v1 manifest"
        in only(
            check_recording(ack, files_of(rec), trust=keys.store), FindingKind.MANIFEST_INVALID
        )[0]
    )


def test_the_log_hash_and_the_camera_can_be_pinned(keys: Keys) -> None:
    rec = recording()
    data = keys.sign(rec)
    good = check_recording(
        data, files_of(rec), trust=keys.store, camera="bwc-12a",
        expected_sha256=hashlib.sha256(data).hexdigest().upper(),
    )  # fmt: skip
    assert good.verdict is Verdict.INTACT
    other = check_recording(data, files_of(rec), trust=keys.store, camera="bwc-7a")
    assert "camera bwc-12a's, not bwc-7a's" in only(other, FindingKind.WRONG_CAMERA)[0]
    swapped = check_recording(data, files_of(rec), trust=keys.store, expected_sha256="0" * 64)
    assert "not the manifest the camera reported" in only(swapped, FindingKind.HASH_MISMATCH)[0]


# --- the command line, on files ---------------------------------------------------------
runner = CliRunner()


def on_disk(rec: Recording, directory: Path, keys: Keys) -> Path:
    directory.mkdir()
    for i, seg in enumerate(rec.segments):
        (directory / seg.name).write_bytes(content(i))
    write_manifest(replace(rec, directory=directory), DEVICE, PayloadSigner(keys.camera))
    return directory


def trust_file(keys: Keys, tmp_path: Path) -> Path:
    path = tmp_path / "trust.yaml"
    keys.store.save(path)
    return path


def test_scan_directory_reports_sizes_and_hashes(keys: Keys, tmp_path: Path) -> None:
    rec = recording()
    directory = on_disk(rec, tmp_path / "rec", keys)
    assert scan_directory(directory) == files_of(rec)
    (directory / "sub").mkdir()
    (directory / "sub" / "0000000007.ts").write_bytes(b"hidden")
    os.mkfifo(directory / "pipe")  # never opened: reading it would block
    assert scan_directory(directory) == {
        **files_of(rec),
        "sub": FileFacts(0, "", EntryKind.DIRECTORY),
        "pipe": FileFacts(0, "", EntryKind.OTHER),
    }


@pytest.mark.parametrize("inserted", ["0000000007.ts.part", "x.ts~", "clip.dat", "sub/"])
def test_the_command_names_an_inserted_file_or_folder_and_exits_1(
    keys: Keys, tmp_path: Path, inserted: str
) -> None:
    """docs/security.md: an inserted file is named, exit 1 (before: `.part`, `~`, `.dat`
    and anything in a subdirectory were only listed, and the verdict was intact, exit 0)."""
    directory = on_disk(recording(), tmp_path / "rec", keys)
    trust = trust_file(keys, tmp_path)
    if inserted.endswith("/"):
        (directory / inserted).mkdir()
        (directory / inserted / "0000000007.ts").write_bytes(content(7))
    else:
        (directory / inserted).write_bytes(content(7))
    (directory / "recording.json").write_bytes(b"{}")
    (directory / "segments.jsonl").write_bytes(b"")
    result = runner.invoke(
        app, ["recording", "verify", str(directory), "--trust", str(trust), "--json"]
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "failed"
    assert [(f["kind"], f["name"]) for f in report["findings"]] == [("extra", inserted.rstrip("/"))]


def test_the_manifest_writers_leftover_is_ignored_and_said(keys: Keys, tmp_path: Path) -> None:
    directory = on_disk(recording(), tmp_path / "rec", keys)
    (directory / ".manifest.json.a1b2c3").write_bytes(b"{")
    trust = trust_file(keys, tmp_path)
    result = runner.invoke(app, ["recording", "verify", str(directory), "--trust", str(trust)])
    assert result.exit_code == 0, result.output
    assert "ignored, the manifest writer's temporary files: .manifest.json.a1b2c3" in (
        result.output
    )


def test_the_command_exits_0_1_3_and_2(keys: Keys, tmp_path: Path) -> None:
    rec = recording()
    directory = on_disk(rec, tmp_path / "rec", keys)
    trust = trust_file(keys, tmp_path)
    intact = runner.invoke(app, ["recording", "verify", str(directory), "--trust", str(trust)])
    assert intact.exit_code == 0, intact.output
    assert "intact: recording r-20261203T120000Z-a1 of camera bwc-12a" in intact.output
    unchecked = runner.invoke(app, ["recording", "verify", str(directory)])
    assert unchecked.exit_code == 3
    assert "not checked against a trusted key" in unchecked.output
    assert "intact" not in unchecked.output
    (directory / "0000000001.ts").unlink()
    removed = runner.invoke(
        app, ["recording", "verify", str(directory), "--trust", str(trust), "--json"]
    )
    assert removed.exit_code == 1
    report = json.loads(removed.stdout)
    assert report["verdict"] == "failed"
    assert [(f["kind"], f["segment"], f["name"]) for f in report["findings"]] == [
        ("removed", 1, "0000000001.ts")
    ]
    assert report["segments"][1] == {"index": 1, "name": "0000000001.ts", "status": "removed"}
    assert report["manifest"]["camera_id"] == "bwc-12a"


def test_the_command_says_what_it_cannot_read_in_one_line(keys: Keys, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["recording", "verify", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "no such directory" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["recording", "verify", str(empty)])
    assert none.exit_code == 2
    assert "no manifest in this directory" in none.output
    bad = runner.invoke(app, ["recording", "verify", str(empty), "--manifest-sha256", "abc"])
    assert bad.exit_code == 2


def test_a_manifest_json_that_is_not_a_manifest_exits_1(keys: Keys, tmp_path: Path) -> None:
    directory = on_disk(recording(), tmp_path / "rec", keys)
    manifest = directory / MANIFEST_FILE
    manifest.chmod(0o644)
    manifest.write_bytes(b"not json at all")
    result = runner.invoke(app, ["recording", "verify", str(directory)])
    assert result.exit_code == 1
    assert "MANIFEST_INVALID: manifest.json is not a signed manifest" in result.output


def test_the_json_payload_is_base64url_of_the_canonical_bytes(keys: Keys) -> None:
    data = keys.sign(recording())
    document = json.loads(data)
    assert set(document) == {"protected", "payload", "signature"}
    payload = base64.urlsafe_b64decode(document["payload"] + "=" * (-len(document["payload"]) % 4))
    assert payload == canonical_bytes(build_manifest(recording(), DEVICE))
