"""Checking a recording against its signed manifest (``trigger-mesh recording verify``).

``check_recording`` is pure: the bytes of ``manifest.json``, what the directory holds
(each file's size and SHA-256) and, optionally, the trust store, in; a ``VerifyReport``
with one ``Finding`` per problem out. ``scan_directory`` and ``read_manifest`` are the I/O.

What is checked (docs/camera.md, "Manifests and their verification"):

1. the manifest's signature: by a key the trust store holds, role camera, subject the
   manifest's ``camera_id``, valid when the recording stopped and never revoked (without a
   trust store it is not checked, and the verdict is never ``intact``);
2. the manifest itself: a v1 manifest in canonical form, indices 0, 1, 2 … in order,
   unique names, numbered names (``0000000042.ts``) consecutive;
3. every listed file: present under its name, with its size and SHA-256. A file that holds
   another listed segment's content is *reordered* (two such files: a swapped pair); a
   listed segment whose content is under another name is *moved*; one whose content is
   nowhere is *removed* (name missing) or *edited* (other content);
4. nothing else in the directory: every regular file the manifest does not list is *extra*
   (whatever its name: ``0000000007.ts.part``, ``x.ts~``, ``clip.dat``), and so is a
   subdirectory or anything else that is not a regular file; only the recorder's own
   metadata (``manifest.json``, ``recording.json``, ``segments.jsonl``) and the manifest
   writer's temporary files (``.manifest.json.*``) are left out;
5. continuity: each segment's first frame comes after the previous one's last (segments
   without frames left out), at most
   ``2 × frame period + 20 ms`` later (*gap*), never at or before it (*overlap*). The frame
   period is the median over the segments of (last - first) / (frames - 1).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import statistics
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from mesh.camera.recording.manifest import (
    MANIFEST_FILE,
    ManifestSegment,
    RecordingManifest,
    canonical_bytes,
    manifest_sha256,
)
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.jws import Jws, parse
from mesh.security.trust import Distrust, KeyRole, TrustedKey

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mesh.security.trust import TrustStore

# Files a recorder writes beside its segments that the manifest does not list.
METADATA_FILES = frozenset({MANIFEST_FILE, "recording.json", "segments.jsonl"})
# The manifest writer's temporary files (manifest.write_atomically), left by a crash while
# it wrote: ignored, and reported as such (``VerifyReport.unlisted``).
MANIFEST_TEMP_PREFIX = f".{MANIFEST_FILE}."
# A boundary between two segments may be this much longer than two frame periods.
GAP_SLACK_NS = 20_000_000
# When no segment has two frames to measure a period by.
DEFAULT_FRAME_PERIOD_NS = 40_000_000  # 25 frames a second
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_NUMBERED = re.compile(r"([0-9]+)(\.[A-Za-z0-9]+)?")
_HASH_CHUNK = 1024 * 1024


class FindingKind(StrEnum):
    """What is wrong (stable codes: ``--json`` and the exit status depend on them)."""

    # the manifest and its signature
    MANIFEST_INVALID = "manifest_invalid"  # not a JWS of a v1 manifest
    NOT_CANONICAL = "not_canonical"  # signed bytes other than the canonical form
    BAD_SIGNATURE = "bad_signature"  # the bytes are not what the key signed
    UNKNOWN_KEY = "unknown_key"  # signed by a key the trust store does not hold
    WRONG_SIGNER = "wrong_signer"  # a key that may not speak for this camera
    KEY_REVOKED = "key_revoked"
    KEY_NOT_VALID = "key_not_valid"  # outside its validity window when the recording stopped
    WRONG_CAMERA = "wrong_camera"  # --camera said another camera
    HASH_MISMATCH = "hash_mismatch"  # --manifest-sha256 (the log's) differs
    # the files
    REMOVED = "removed"
    EDITED = "edited"
    REORDERED = "reordered"
    MOVED = "moved"
    EXTRA = "extra"
    # the manifest's own order and times
    BAD_INDEX = "bad_index"
    DUPLICATE_NAME = "duplicate_name"
    NAME_SEQUENCE = "name_sequence"
    BAD_FRAMES = "bad_frames"  # a segment ending before it starts
    GAP = "gap"
    OVERLAP = "overlap"
    NO_SEGMENTS = "no_segments"


_SIGNATURE_KINDS: dict[str, FindingKind] = {
    Distrust.BAD_SIGNATURE: FindingKind.BAD_SIGNATURE,
    Distrust.UNKNOWN_KEY: FindingKind.UNKNOWN_KEY,
    Distrust.WRONG_SIGNER: FindingKind.WRONG_SIGNER,
    Distrust.REVOKED: FindingKind.KEY_REVOKED,
    Distrust.NOT_YET_VALID: FindingKind.KEY_NOT_VALID,
    Distrust.KEY_EXPIRED: FindingKind.KEY_NOT_VALID,
}


_SIGNER_FINDINGS = frozenset(
    {
        FindingKind.BAD_SIGNATURE,
        FindingKind.UNKNOWN_KEY,
        FindingKind.WRONG_SIGNER,
        FindingKind.KEY_REVOKED,
        FindingKind.KEY_NOT_VALID,
    }
)


class Verdict(StrEnum):
    INTACT = "intact"  # signed by the camera's trusted key; every file and time checks
    UNVERIFIED = "unverified"  # the files match, but the signature was not checked
    FAILED = "failed"  # at least one finding


class EntryKind(StrEnum):
    FILE = "file"  # a regular file (or a link to one)
    DIRECTORY = "directory"
    OTHER = "other"  # a FIFO, a socket, a device, a dangling link: never read


@dataclass(frozen=True)
class FileFacts:
    size: int
    sha256: str
    kind: EntryKind = EntryKind.FILE


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    message: str
    segment: int | None = None  # the manifest index it concerns, if one
    name: str | None = None  # the file it concerns, if one

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "segment": self.segment,
            "name": self.name,
            "message": self.message,
        }


@dataclass
class VerifyReport:
    manifest_sha256: str
    key_id: str | None = None
    manifest: RecordingManifest | None = None
    signer: TrustedKey | None = None  # None: not checked, or refused
    signature_checked: bool = False
    findings: list[Finding] = field(default_factory=list)
    segment_status: dict[int, str] = field(default_factory=dict)  # index -> ok / a kind
    unlisted: list[str] = field(default_factory=list)  # ignored: the manifest writer's temps
    frame_period_ns: int | None = None
    max_gap_ns: int | None = None

    @property
    def verdict(self) -> Verdict:
        if self.findings:
            return Verdict.FAILED
        return Verdict.INTACT if self.signature_checked else Verdict.UNVERIFIED

    def add(self, kind: FindingKind, message: str, *, segment: int | None = None,
            name: str | None = None) -> None:  # fmt: skip
        self.findings.append(Finding(kind, message, segment, name))
        if segment is not None and self.segment_status.get(segment, "ok") == "ok":
            self.segment_status[segment] = kind.value

    def signature_line(self) -> str:
        """What the signature check established."""
        if self.signer is not None:
            return (
                f"signature: good, by camera {self.signer.subject}'s key {self.signer.key_id} "
                "in the trust store"
            )
        refused = [f for f in self.findings if f.kind in _SIGNER_FINDINGS]
        if refused:
            return f"signature: refused ({refused[0].kind.value})"
        if self.key_id is None:
            return "signature: none found"
        return (
            f"signature: key {self.key_id}, not checked against a trusted key (no --trust): "
            "anyone could have signed it"
        )

    def summary(self) -> str:
        """One line: the verdict and what it rests on."""
        m = self.manifest
        what = (
            f"recording {m.recording_id} of camera {m.camera_id}, {len(m.segments)} segments"
            if m is not None
            else "recording"
        )
        if self.verdict is Verdict.FAILED:
            count = len(self.findings)
            return f"FAILED: {what}: {count} finding{'s' if count != 1 else ''}"
        if self.verdict is Verdict.INTACT:
            assert self.signer is not None
            return (
                f"intact: {what}, signed by camera {self.signer.subject} (key {self.signer.key_id})"
            )
        return (
            f"unverified: {what}: files, hashes and continuity match the manifest, but its "
            f"signature (key {self.key_id}) was not checked against a trusted key (--trust)"
        )

    def as_dict(self) -> dict[str, object]:
        m = self.manifest
        return {
            "verdict": self.verdict.value,
            "summary": self.summary(),
            "manifest_sha256": self.manifest_sha256,
            "key_id": self.key_id,
            "signature_checked": self.signature_checked,
            "signature": self.signature_line(),
            "signer": None
            if self.signer is None
            else {
                "key_id": self.signer.key_id,
                "role": self.signer.role.value,
                "subject": self.signer.subject,
            },
            "manifest": None if m is None else m.model_dump(mode="json"),
            "segments": []
            if m is None
            else [
                {"index": s.index, "name": s.name, "status": self.segment_status.get(i, "ok")}
                for i, s in enumerate(m.segments)
            ],
            "frame_period_ns": None if self.frame_period_ns is None else str(self.frame_period_ns),
            "max_gap_ns": None if self.max_gap_ns is None else str(self.max_gap_ns),
            "findings": [f.as_dict() for f in self.findings],
            "unlisted": list(self.unlisted),
        }


# --- I/O ------------------------------------------------------------------------------------
class ManifestUnreadable(Exception):
    """The directory or its manifest.json cannot be read at all (exit 2)."""


def read_manifest(directory: Path) -> bytes:
    if not directory.is_dir():
        problem = "no such directory" if not directory.exists() else "not a directory"
        raise ManifestUnreadable(f"{directory}: {problem}")
    path = directory / MANIFEST_FILE
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestUnreadable(
            f"{path}: no manifest in this directory (a recording still running has none yet)"
        ) from None
    except OSError as exc:
        raise ManifestUnreadable(f"{path}: cannot read the manifest ({exc.strerror})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestUnreadable(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def scan_directory(directory: Path) -> dict[str, FileFacts]:
    """Every entry in ``directory`` but the manifest: a regular file with its size and
    SHA-256; a subdirectory (not entered) or anything else (not read) as just that."""
    files: dict[str, FileFacts] = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST_FILE:
            continue
        if path.is_dir():
            files[path.name] = FileFacts(0, "", EntryKind.DIRECTORY)
            continue
        if not path.is_file():
            files[path.name] = FileFacts(0, "", EntryKind.OTHER)
            continue
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        files[path.name] = FileFacts(size, digest.hexdigest())
    return files


# --- the check ------------------------------------------------------------------------------
def check_recording(
    manifest_file: bytes,
    files: Mapping[str, FileFacts],
    *,
    trust: TrustStore | None = None,
    camera: str | None = None,
    expected_sha256: str | None = None,
) -> VerifyReport:
    """Every problem of a recording (see the module's docstring). ``files`` is what the
    directory holds (``scan_directory``); ``camera`` the camera it must be from, and
    ``expected_sha256`` the manifest hash the activation log holds, if known."""
    report = VerifyReport(manifest_sha256=manifest_sha256(manifest_file))
    if expected_sha256 is not None and expected_sha256.lower() != report.manifest_sha256:
        report.add(
            FindingKind.HASH_MISMATCH,
            f"manifest.json's SHA-256 is {report.manifest_sha256}, not {expected_sha256.lower()}"
            " (the hash the activation log holds): this is not the manifest the camera reported",
        )
    try:
        jws = parse(manifest_file)
    except PayloadError as exc:
        report.add(FindingKind.MANIFEST_INVALID, f"manifest.json is not a signed manifest: {exc}")
        return report
    report.key_id = jws.kid
    signature_ok = _check_signature(report, jws, trust)
    try:
        manifest = decode(RecordingManifest, jws.payload_bytes, max_bytes=MAX_MANIFEST_BYTES)
    except PayloadError as exc:
        report.add(FindingKind.MANIFEST_INVALID, f"the signed payload is not a v1 manifest: {exc}")
        return report
    report.manifest = manifest
    if signature_ok and trust is not None:
        _check_signer(report, manifest, trust, jws.kid)
    if jws.payload_bytes != canonical_bytes(manifest):
        report.add(
            FindingKind.NOT_CANONICAL,
            "the signed bytes are not the manifest's canonical form (sorted members, no "
            "whitespace, UTF-8): another serialisation of it would hash differently",
        )
    if camera is not None and manifest.camera_id != camera:
        report.add(
            FindingKind.WRONG_CAMERA,
            f"the manifest is camera {manifest.camera_id}'s, not {camera}'s",
        )
    _check_order(report, manifest)
    _check_files(report, manifest, files)
    _check_continuity(report, manifest)
    return report


def _check_signature(report: VerifyReport, jws: Jws, trust: TrustStore | None) -> bool:
    if trust is None:
        return False
    verified = trust.verify(jws)
    if isinstance(verified, TrustedKey):
        return True
    kind = _SIGNATURE_KINDS.get(verified.code, FindingKind.BAD_SIGNATURE)
    if kind is FindingKind.BAD_SIGNATURE:
        message = (
            f"signature by key {jws.kid} does not match the manifest's bytes: the manifest "
            "was changed after the camera signed it"
        )
    else:
        message = f"{verified.reason}: not a key of this fleet's trust store"
    report.add(kind, message)
    return False


def _check_signer(
    report: VerifyReport, manifest: RecordingManifest, trust: TrustStore, kid: str
) -> None:
    key = trust.keys[kid]
    if key.revoked_at is not None:
        report.add(
            FindingKind.KEY_REVOKED,
            f"signed by key {kid} ({key.role.value} {key.subject}), revoked at "
            f"{key.revoked_at.isoformat()}: what it signs is no longer evidence",
        )
        return
    problem = trust.signer_problem(
        key,
        "a recording manifest",
        [(KeyRole.CAMERA, manifest.camera_id)],
        now_ns=manifest.stopped_at_ns,  # the key had to be valid when the camera signed
    )
    if problem is None:
        report.signer = key
        report.signature_checked = True
        return
    kind = _SIGNATURE_KINDS.get(problem.code, FindingKind.WRONG_SIGNER)
    report.add(kind, f"{problem.reason} (for camera {manifest.camera_id}'s recording)")


def _check_order(report: VerifyReport, manifest: RecordingManifest) -> None:
    segments = manifest.segments
    if not segments:
        report.add(FindingKind.NO_SEGMENTS, "the manifest lists no segment")
        return
    seen: dict[str, int] = {}
    for position, segment in enumerate(segments):
        if segment.index != position:
            report.add(
                FindingKind.BAD_INDEX,
                f"segment {segment.name} is listed at position {position} with index "
                f"{segment.index}",
                segment=position,
                name=segment.name,
            )
        if segment.name in seen:
            report.add(
                FindingKind.DUPLICATE_NAME,
                f"{segment.name} is listed twice (segments {seen[segment.name]} and {position})",
                segment=position,
                name=segment.name,
            )
        seen.setdefault(segment.name, position)
        if segment.frames > 0 and segment.last_frame_ns < segment.first_frame_ns:
            report.add(
                FindingKind.BAD_FRAMES,
                f"segment {position} ({segment.name}) ends before it starts",
                segment=position,
                name=segment.name,
            )
    numbers = [_NUMBERED.fullmatch(s.name) for s in segments]
    if all(numbers):
        for position in range(1, len(segments)):
            before, now = numbers[position - 1], numbers[position]
            assert before is not None
            assert now is not None
            if int(now.group(1)) != int(before.group(1)) + 1 or now.group(2) != before.group(2):
                report.add(
                    FindingKind.NAME_SEQUENCE,
                    f"segment {position} is {segments[position].name}, after "
                    f"{segments[position - 1].name}: names are not consecutive",
                    segment=position,
                    name=segments[position].name,
                )


def _check_files(
    report: VerifyReport, manifest: RecordingManifest, files: Mapping[str, FileFacts]
) -> None:
    _FileCheck(report, manifest.segments, files).run()


class _FileCheck:
    """Each listed segment against the file under its name, then the unlisted files."""

    def __init__(
        self,
        report: VerifyReport,
        segments: tuple[ManifestSegment, ...],
        files: Mapping[str, FileFacts],
    ) -> None:
        self.report, self.segments, self.files = report, segments, files
        self.by_hash: dict[str, list[int]] = {}
        for position, segment in enumerate(segments):
            self.by_hash.setdefault(segment.sha256, []).append(position)
        self.names_by_hash: dict[str, list[str]] = {}
        for name, facts in files.items():
            if facts.kind is EntryKind.FILE:
                self.names_by_hash.setdefault(facts.sha256, []).append(name)
        # What each listed name holds: its own segment's content (its position), another
        # listed segment's, or (None) content the manifest does not list.
        self.holds: dict[int, int | None] = {}
        for position, segment in enumerate(segments):
            found = files.get(segment.name)
            if found is None:
                continue
            if found.sha256 == segment.sha256 and found.size == segment.bytes:
                self.holds[position] = position
            else:
                others = [p for p in self.by_hash.get(found.sha256, []) if p != position]
                self.holds[position] = others[0] if others else None
        self.pairs: set[tuple[int, int]] = set()
        # Unlisted names that hold a missing segment's content: named by its `moved` finding.
        self.moved_to: set[str] = set()

    def run(self) -> None:
        for position, segment in enumerate(self.segments):
            if self.holds.get(position, -1) != position:
                self.listed(position, segment)
        self.unlisted()

    def listed(self, position: int, segment: ManifestSegment) -> None:
        elsewhere = [n for n in self.names_by_hash.get(segment.sha256, []) if n != segment.name]
        found = self.files.get(segment.name)
        held = self.holds.get(position)
        if found is None and elsewhere:
            self.moved_to.update(elsewhere)
            self.report.add(
                FindingKind.MOVED,
                f"segment {position} ({segment.name}) is missing under its name; its "
                f"content is in {', '.join(elsewhere)}",
                segment=position,
                name=segment.name,
            )
        elif found is None:
            self.report.add(
                FindingKind.REMOVED,
                f"segment {position} ({segment.name}) is missing: removed "
                f"({_span(segment.first_frame_ns, segment.last_frame_ns)} of video)",
                segment=position,
                name=segment.name,
            )
        elif found.kind is not EntryKind.FILE:
            self.report.add(
                FindingKind.EDITED,
                f"segment {position} ({segment.name}) was changed: it should be a file of "
                f"{segment.bytes} bytes, and is a {found.kind.value}"
                + (f"; its content is in {', '.join(elsewhere)}" if elsewhere else ""),
                segment=position,
                name=segment.name,
            )
        elif held is not None and elsewhere:
            self.reordered(position, held, elsewhere)
        else:
            what = (
                f"a copy of segment {held}'s content ({self.segments[held].name})"
                if held is not None
                else f"other content ({found.size} bytes, SHA-256 {found.sha256[:16]}…)"
            )
            self.report.add(
                FindingKind.EDITED,
                f"segment {position} ({segment.name}) was changed: it should be "
                f"{segment.bytes} bytes with SHA-256 {segment.sha256[:16]}…, and holds {what}",
                segment=position,
                name=segment.name,
            )

    def reordered(self, position: int, partner: int, elsewhere: list[str]) -> None:
        """The file of ``position`` holds ``partner``'s content, and its own is elsewhere."""
        segment = self.segments[position]
        if self.holds.get(partner) != position:
            self.report.add(
                FindingKind.REORDERED,
                f"{segment.name} (segment {position}) holds segment {partner}'s content "
                f"({self.segments[partner].name}); its own content is in "
                f"{', '.join(elsewhere)}",
                segment=position,
                name=segment.name,
            )
            return
        pair = (min(position, partner), max(position, partner))
        if pair in self.pairs:
            return
        self.pairs.add(pair)
        a, b = self.segments[pair[0]], self.segments[pair[1]]
        message = (
            f"segments {pair[0]} ({a.name}) and {pair[1]} ({b.name}) are swapped: each "
            "file holds the other's content"
        )
        # One finding for the pair (its first segment), both segments' status reordered.
        self.report.add(FindingKind.REORDERED, message, segment=pair[0], name=a.name)
        self.report.segment_status[pair[1]] = FindingKind.REORDERED.value

    def unlisted(self) -> None:
        """Whatever else the directory holds is extra, but the recorder's metadata and the
        manifest writer's temporary files: a name or a folder proves nothing harmless."""
        listed = {s.name for s in self.segments}
        for name in sorted(self.files):
            facts = self.files[name]
            if name in listed or name in self.moved_to:
                continue
            if facts.kind is not EntryKind.FILE:
                why = (
                    f"{name}/ is a subdirectory: a recording's directory holds none (an "
                    "inserted or extra folder)"
                    if facts.kind is EntryKind.DIRECTORY
                    else f"{name} is not in the manifest and not a regular file (an "
                    "inserted or extra entry)"
                )
                self.report.add(FindingKind.EXTRA, why, name=name)
                continue
            if name in METADATA_FILES:
                continue
            if name.startswith(MANIFEST_TEMP_PREFIX):
                self.report.unlisted.append(name)
                continue
            copies = self.by_hash.get(facts.sha256, [])
            what = (
                f"a copy of segment {copies[0]} ({self.segments[copies[0]].name})"
                if copies
                else f"{facts.size} bytes the camera never listed"
            )
            self.report.add(
                FindingKind.EXTRA,
                f"{name} is not in the manifest: an inserted or extra file ({what})",
                name=name,
            )


def frame_period_ns(manifest: RecordingManifest) -> int | None:
    """The median frame period over the segments with two frames or more."""
    periods = [
        (s.last_frame_ns - s.first_frame_ns) / (s.frames - 1)
        for s in manifest.segments
        if s.frames >= 2 and s.last_frame_ns > s.first_frame_ns
    ]
    return round(statistics.median(periods)) if periods else None


def _check_continuity(report: VerifyReport, manifest: RecordingManifest) -> None:
    period = frame_period_ns(manifest)
    report.frame_period_ns = period
    allowed = 2 * (period or DEFAULT_FRAME_PERIOD_NS) + GAP_SLACK_NS
    report.max_gap_ns = allowed
    # A segment without frames (one closed as the source stopped) has no times to follow.
    timed = [(p, s) for p, s in enumerate(manifest.segments) if s.frames > 0]
    for (before_at, before), (position, now) in itertools.pairwise(timed):
        step = now.first_frame_ns - before.last_frame_ns
        if step <= 0:
            report.add(
                FindingKind.OVERLAP,
                f"segment {position} ({now.name}) starts at or before the end of segment "
                f"{before_at} ({before.name}), by {_span(0, -step)}",
                segment=position,
                name=now.name,
            )
        elif step > allowed:
            report.add(
                FindingKind.GAP,
                f"{_span(before.last_frame_ns, now.first_frame_ns)} between the last frame of "
                f"segment {before_at} ({before.name}) and the first of segment {position} "
                f"({now.name}); at most {_span(0, allowed)} (two frame periods + 20 ms) is "
                "continuous",
                segment=position,
                name=now.name,
            )


def _span(start_ns: int, end_ns: int) -> str:
    return f"{(end_ns - start_ns) / 1e9:.3f} s"
