"""`trigger-mesh recording verify` on real footage (issue 19, items 5 and 7): FFmpeg encodes
five seconds of its test source into one-second MPEG-TS segments, ffprobe gives each
segment's frame count and first and last frame times, and a camera key made by
`trigger-mesh keys new` signs the manifest of the first four. The command calls that
recording intact; then each kind of tampering is done to a copy of it, as someone with the
files would do it, and the command names it and exits 1.

Under CI=true a missing ffmpeg or ffprobe fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.camera.recording.base import Recording, SegmentFile, StopReason
from mesh.camera.recording.manifest import MANIFEST_FILE, DeviceInfo, write_manifest
from mesh.protocol.jws import Jws, b64url, parse
from mesh.security.signing import PayloadSigner
from tests.conftest import IN_CI

CLI = [sys.executable, "-m", "mesh"]
NS = 1_000_000_000
SEGMENTS = 4  # in the recording; FFmpeg writes one more, kept aside for the insertion
# Five seconds of FFmpeg's test pattern at 25 fps, H.264 with a keyframe each second, cut
# into one-second MPEG-TS segments (what the FFmpeg recorder writes).
PROBE = "-v error -select_streams v:0 -show_entries frame=pts_time -of json"
ENCODE = (
    "-hide_banner -loglevel error -f lavfi -i testsrc2=size=320x240:rate=25 "
    f"-t {SEGMENTS + 1} -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 25 "
    "-f segment -segment_time 1 -segment_format mpegts"
)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (apt-get install -y ffmpeg)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def cli(*args: str | Path) -> tuple[int, str]:
    done = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout + done.stderr


def probe(ffprobe: str, path: Path, base_ns: int) -> SegmentFile:
    """A segment as a recorder reports it: frames and first/last frame times from ffprobe
    (media time, put on the wall clock at ``base_ns``), size and SHA-256 of the file."""
    out = subprocess.run(
        [
            ffprobe,
            *PROBE.split(),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    times = [round(float(f["pts_time"]) * NS) for f in json.loads(out)["frames"]]
    data = path.read_bytes()
    return SegmentFile(
        name=path.name,
        first_frame_ns=base_ns + min(times),
        last_frame_ns=base_ns + max(times),
        frames=len(times),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


@dataclass(frozen=True)
class Footage:
    directory: Path  # the recording, signed
    recording: Recording
    spare: Path  # FFmpeg's fifth segment, not in the recording
    trust: Path
    keys: Path  # bwc-12a.key (the camera's), bwc-7a.key (another camera's)


DEVICE = DeviceInfo.of(
    model="FFmpeg lavfi", serial="test-1", source="rtsp://admin:secret@127.0.0.1/testsrc2"
)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Footage:
    ffmpeg, ffprobe = require("ffmpeg"), require("ffprobe")
    root = tmp_path_factory.mktemp("recording")
    raw = root / "raw"
    raw.mkdir()
    base_ns = time.time_ns()
    subprocess.run(
        [ffmpeg, *ENCODE.split(), str(raw / "%010d.ts")],
        check=True,
        timeout=120,
    )
    made = sorted(raw.glob("*.ts"))
    assert len(made) == SEGMENTS + 1, made
    directory = root / "bwc-12a" / "recordings" / "20261204T120000Z-a-77fd793654b858c3"
    directory.mkdir(parents=True)
    for path in made[:SEGMENTS]:
        shutil.copy(path, directory / path.name)
    segments = [probe(ffprobe, directory / p.name, base_ns) for p in made[:SEGMENTS]]
    assert all(s.frames == 25 for s in segments[1:]), segments
    first = segments[0].first_frame_ns
    recording = Recording(
        recording_id="r-a-77fd793654b858c3",
        camera_id="bwc-12a",
        activations=["a-77fd793654b858c3"],
        command_at_ns=first + 2 * NS,
        started_at_ns=first + 2 * NS + 40_000_000,
        first_frame_ns=first,
        pre_event_kept_s=2.04,
        directory=directory,
        segments=segments,
        stopped_at_ns=segments[-1].last_frame_ns + 40_000_000,
        stop_reason=StopReason.LOW_DISK,
    )
    keys, trust = root / "keys", root / "trust.yaml"
    for camera in ("bwc-12a", "bwc-7a"):
        code, out = cli(
            "keys", "new", "--role", "camera", "--id", camera, "--out", keys, "--trust", trust
        )
        assert code == 0, out
    write_manifest(recording, DEVICE, PayloadSigner.from_file(keys / "bwc-12a.key"))
    return Footage(directory, recording, made[SEGMENTS], trust, keys)


def copy_of(footage: Footage, tmp_path: Path) -> Path:
    return Path(shutil.copytree(footage.directory, tmp_path / footage.directory.name))


def test_a_real_recording_is_intact_against_the_cameras_key(footage: Footage) -> None:
    code, out = cli("recording", "verify", footage.directory, "--trust", footage.trust)
    assert code == 0, out
    assert (
        f"intact: recording r-a-77fd793654b858c3 of camera bwc-12a, {SEGMENTS} segments, "
        "signed by camera bwc-12a" in out
    )
    manifest = (footage.directory / MANIFEST_FILE).read_bytes()
    assert hashlib.sha256(manifest).hexdigest() in out  # what the `recording` message carries
    assert b"secret" not in parse(manifest).payload_bytes  # the source's password left out
    code, out = cli("recording", "verify", footage.directory, "--json")
    assert code == 3, out  # no trust store: the signature was not checked
    report = json.loads(out)
    assert report["verdict"] == "unverified"
    assert report["findings"] == []
    assert report["frame_period_ns"] == "40000000"  # 25 fps, from ffprobe's frame times


def flip_bytes(directory: Path) -> None:
    path = directory / "0000000002.ts"
    data = bytearray(path.read_bytes())
    for offset in range(5000, 5010):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def remove(directory: Path) -> None:
    (directory / "0000000001.ts").unlink()


def swap(directory: Path) -> None:
    (directory / "0000000001.ts").rename(directory / "tmp")
    (directory / "0000000003.ts").rename(directory / "0000000001.ts")
    (directory / "tmp").rename(directory / "0000000003.ts")


def edit_manifest(directory: Path) -> None:
    """The stop reason rewritten (low_disk to officer, with a note), signature kept."""
    path = directory / MANIFEST_FILE
    jws = parse(path.read_bytes())
    payload = jws.payload_bytes.replace(
        b'"stop_note":"","stop_reason":"low_disk"',
        b'"stop_note":"incident over","stop_reason":"officer"',
    )
    assert payload != jws.payload_bytes
    path.chmod(0o644)
    path.write_bytes(Jws(jws.protected, b64url(payload), jws.signature, jws.kid).to_bytes())


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "edited": (flip_bytes, "EDITED: segment 2 (0000000002.ts) was changed"),
    "removed": (remove, "REMOVED: segment 1 (0000000001.ts) is missing: removed"),
    "reordered": (
        swap,
        "REORDERED: segments 1 (0000000001.ts) and 3 (0000000003.ts) are swapped",
    ),
    "manifest edited": (edit_manifest, "BAD_SIGNATURE: signature by key"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_tampering_is_named(footage: Footage, tmp_path: Path, case: str) -> None:
    tamper, named = CASES[case]
    directory = copy_of(footage, tmp_path)
    tamper(directory)
    code, out = cli("recording", "verify", directory, "--trust", footage.trust)
    assert code == 1, out
    assert named in out
    assert "FAILED" in out
    assert "intact" not in out


def test_an_inserted_segment_is_named(footage: Footage, tmp_path: Path) -> None:
    """FFmpeg's next real segment, added after the last: it continues the names and the
    times, but the camera never listed it."""
    directory = copy_of(footage, tmp_path)
    shutil.copy(footage.spare, directory / footage.spare.name)
    code, out = cli("recording", "verify", directory, "--trust", footage.trust, "--json")
    assert code == 1, out
    findings = json.loads(out)["findings"]
    assert [(f["kind"], f["name"]) for f in findings] == [("extra", "0000000004.ts")]


def test_a_manifest_signed_by_another_cameras_key_is_named(
    footage: Footage, tmp_path: Path
) -> None:
    directory = copy_of(footage, tmp_path)
    (directory / MANIFEST_FILE).unlink()
    recording = Recording(**{**vars(footage.recording), "directory": directory})
    write_manifest(recording, DEVICE, PayloadSigner.from_file(footage.keys / "bwc-7a.key"))
    code, out = cli("recording", "verify", directory, "--trust", footage.trust)
    assert code == 1, out
    assert "WRONG_SIGNER: signed by camera bwc-7a" in out
    assert "must be signed by camera bwc-12a" in out


def test_a_segment_left_out_by_the_camera_is_a_gap(footage: Footage, tmp_path: Path) -> None:
    """The camera's own manifest (validly signed) without segment 2: a second of video
    missing between segments 1 and 3."""
    directory = copy_of(footage, tmp_path)
    (directory / "0000000002.ts").unlink()
    (directory / MANIFEST_FILE).unlink()
    kept = [s for s in footage.recording.segments if s.name != "0000000002.ts"]
    recording = Recording(**{**vars(footage.recording), "directory": directory, "segments": kept})
    write_manifest(recording, DEVICE, PayloadSigner.from_file(footage.keys / "bwc-12a.key"))
    code, out = cli("recording", "verify", directory, "--trust", footage.trust)
    assert code == 1, out
    assert "GAP: 1.040 s between the last frame of segment 1 (0000000001.ts)" in out
    assert "NAME_SEQUENCE: segment 2 is 0000000003.ts, after 0000000001.ts" in out
