"""The evidence manifest of a recording: what the camera recorded, signed with its key.

One manifest per recording, written when it stops, as ``manifest.json`` in the recording's
directory (docs/security.md, "Recording manifests"; docs/camera.md). It lists the
activations the recording was for, the device, the command, start, first-frame and stop
times, why it stopped, and every segment file in order with its SHA-256, size, frame count
and first and last frame times.

- **Canonical form.** The manifest is a JSON object serialised as RFC 8785 (JCS) does it:
  members sorted by name, no whitespace, UTF-8, strings escaped minimally. Every number in
  it is an integer below 2^53 (times are strings of decimal digits, as on the wire; the
  pre-event span is whole milliseconds), so this is also
  ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
- **Signed form.** ``manifest.json`` is a JWS of those bytes, exactly as a camera signs its
  acks (``mesh.protocol.jws``, flattened JSON serialisation, EdDSA, the camera's key and
  ``kid``, ``typ`` ``trigger-mesh+json``); the payload's ``type`` is
  ``recording_manifest``, which no wire message has, so a manifest cannot pass for an ack
  or a command.
- **Its hash.** ``manifest_sha256`` is the SHA-256 of the file's exact bytes: the
  `recording` message carries it, so the gateway's hash-chained log commits to the footage.

The builder and the serialisation are pure; ``write_manifest`` is the only I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from mesh.camera.recording.base import Recording, StopReason
from mesh.media import SECRET_PARAMS
from mesh.protocol.models import MAX_SAFE_INT, Ident, TimeNs

if TYPE_CHECKING:
    from mesh.protocol.jws import Jws
    from mesh.security.signing import PayloadSigner

MANIFEST_FILE = "manifest.json"
MANIFEST_TYPE = "recording_manifest"
MANIFEST_VERSION = 1
# Beside the payload schemas that `trigger-mesh schema` writes (docs/schemas).
MANIFEST_SCHEMA_FILE = "recording-manifest.schema.json"
STOP_NOTE_MAX = 1024

_SHA256 = r"^[0-9a-f]{64}$"
# A segment's name: a portable file name in the recording's directory, never a path.
_FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$"
# Query parameters of a source URL that may carry a secret: left out of the manifest.

Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]


class _Strict(BaseModel):
    """Immutable, no coercion, and no member a v1 manifest does not have."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class DeviceInfo(_Strict):
    """What recorded: the camera's make and model, its serial, and its source (a device
    path or a stream URL without credentials). Empty when unknown."""

    model: Annotated[str, Field(max_length=256, description="Make and model")] = ""
    serial: Annotated[str, Field(max_length=256, description="Serial number")] = ""
    source: Annotated[
        str,
        Field(
            max_length=1024,
            description="The recorder's source: a V4L2 device path, a stream URL without "
            "user name, password or token, or an FFmpeg test source",
        ),
    ] = ""

    @classmethod
    def of(cls, *, model: str = "", serial: str = "", source: str = "") -> DeviceInfo:
        """The device, with any credentials taken out of ``source`` (and each text cut to
        its limit, so that a long one never keeps a manifest from being written)."""
        return cls(
            model=text_within(model, 256),
            serial=text_within(serial, 256),
            source=text_within(source_without_credentials(source), 1024),
        )


def text_within(text: str, limit: int) -> str:
    """``text`` as a manifest can hold it: valid Unicode (a lone surrogate, which UTF-8
    cannot encode, becomes U+FFFD) and at most ``limit`` characters."""
    clean = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def source_without_credentials(source: str) -> str:
    """A source URL without its user name and password, and without query parameters
    that may hold a secret (``password``, ``token``, ``key``, …); anything that is not a
    URL (a device path, an FFmpeg filter) as it is."""
    parts = urlsplit(source)
    if not parts.scheme or not parts.netloc:
        return source
    host = parts.netloc.rpartition("@")[2]
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_PARAMS
        ]
    )
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


class ManifestSegment(_Strict):
    """One segment file of the recording, in recording order."""

    index: Annotated[Count, Field(description="Its position in the recording, from 0")]
    name: Annotated[
        str,
        Field(pattern=_FILE_NAME, description="The file's name in the recording's directory"),
    ]
    sha256: Annotated[str, Field(pattern=_SHA256, description="SHA-256 of the file, hex")]
    bytes: Annotated[Count, Field(description="The file's size")]
    frames: Annotated[Count, Field(description="Video frames in the file")]
    first_frame_ns: Annotated[TimeNs, Field(description="Media time of its first frame")]
    last_frame_ns: Annotated[TimeNs, Field(description="Media time of its last frame")]


class RecordingManifest(_Strict):
    """The evidence manifest of one recording (docs/security.md, "Recording manifests"):
    its payload, before signing. Times are UTC ns since the Unix epoch, as decimal text."""

    model_config = ConfigDict(title="RecordingManifest")

    type: Literal["recording_manifest"] = "recording_manifest"  # MANIFEST_TYPE
    version: Literal[1] = 1  # MANIFEST_VERSION
    camera_id: Annotated[Ident, Field(description="The camera whose key signs the manifest")]
    device: DeviceInfo
    recording_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
    activations: Annotated[
        tuple[Ident, ...],
        Field(min_length=1, description="Every activation the recording was for, in order"),
    ]
    command_at_ns: Annotated[
        TimeNs, Field(description="The camera's clock when the first command arrived")
    ]
    started_at_ns: Annotated[
        TimeNs, Field(description="Media time of the first frame after the command")
    ]
    first_frame_ns: Annotated[
        TimeNs, Field(description="Media time of the first kept (pre-event) frame")
    ]
    pre_event_kept_ms: Annotated[
        Count, Field(description="Pre-event video kept: started_at - first_frame, in ms")
    ]
    stopped_at_ns: Annotated[TimeNs, Field(description="When the recording stopped")]
    stop_reason: Annotated[StopReason, Field(description="Why it stopped")]
    stop_note: Annotated[
        str,
        Field(
            max_length=STOP_NOTE_MAX,
            description="The officer's spoken or typed reason (a longer one is cut, ending …)",
        ),
    ] = ""
    segments: Annotated[
        tuple[ManifestSegment, ...], Field(description="Every segment file, in recording order")
    ]


# --- building -----------------------------------------------------------------------------
def build_manifest(recording: Recording, device: DeviceInfo) -> RecordingManifest:
    """The manifest of a stopped recording. Raises ValueError if it has not stopped."""
    if recording.stopped_at_ns is None or recording.stop_reason is None:
        raise ValueError(f"recording {recording.recording_id} has not stopped: no manifest yet")
    return RecordingManifest(
        camera_id=recording.camera_id,
        device=device,
        recording_id=recording.recording_id,
        activations=tuple(recording.activations),
        command_at_ns=recording.command_at_ns,
        started_at_ns=recording.started_at_ns,
        first_frame_ns=recording.first_frame_ns,
        pre_event_kept_ms=_whole_ms(recording.pre_event_kept_s),
        stopped_at_ns=recording.stopped_at_ns,
        stop_reason=StopReason(recording.stop_reason),
        stop_note=text_within(recording.stop_note, STOP_NOTE_MAX),
        segments=tuple(
            ManifestSegment(
                index=index,
                name=segment.name,
                sha256=segment.sha256,
                bytes=segment.bytes,
                frames=segment.frames,
                first_frame_ns=segment.first_frame_ns,
                last_frame_ns=segment.last_frame_ns,
            )
            for index, segment in enumerate(recording.segments)
        ),
    )


def _whole_ms(seconds: float) -> int:
    return max(0, round(seconds * 1000)) if math.isfinite(seconds) else 0


def canonical_bytes(manifest: RecordingManifest) -> bytes:
    """The manifest's canonical form: what is signed (see the module's docstring)."""
    return canonical_json(manifest.model_dump(mode="json"))


def canonical_json(value: Any) -> bytes:
    """RFC 8785 for JSON without fractional numbers: sorted members, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sign_manifest(manifest: RecordingManifest, signer: PayloadSigner) -> Jws:
    """The signed manifest: a JWS of its canonical bytes, by the camera's key."""
    return signer.seal_bytes(canonical_bytes(manifest))


def signed_bytes(manifest: RecordingManifest, signer: PayloadSigner) -> bytes:
    """The exact bytes of ``manifest.json``: the JWS as compact JSON, no trailing newline."""
    return sign_manifest(manifest, signer).to_bytes()


def manifest_sha256(data: bytes) -> str:
    """What the `recording` message carries: SHA-256 (hex) of manifest.json's exact bytes."""
    return hashlib.sha256(data).hexdigest()


# --- writing ------------------------------------------------------------------------------
def write_manifest(
    recording: Recording, device: DeviceInfo, signer: PayloadSigner
) -> tuple[Path, str]:
    """Build, sign and write ``manifest.json`` into the recording's directory, atomically
    (a temporary file, fsynced, renamed over, the directory fsynced). Returns its path and
    its ``manifest_sha256``."""
    if recording.directory is None:
        raise ValueError(f"recording {recording.recording_id} has no directory (simulated)")
    data = signed_bytes(build_manifest(recording, device), signer)
    path = recording.directory / MANIFEST_FILE
    write_atomically(path, data)
    return path, manifest_sha256(data)


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- schema -------------------------------------------------------------------------------
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of a manifest's payload (what manifest.json signs)."""
    schema = RecordingManifest.model_json_schema()
    # Every member is written (the canonical form has them all), defaults included.
    for part in [schema, *schema.get("$defs", {}).values()]:
        if "properties" in part:
            part["required"] = list(part["properties"])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://trigger-mesh.example/schemas/v1/{MANIFEST_SCHEMA_FILE}"
    return schema


def write_manifest_schema(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_SCHEMA_FILE
    path.write_text(json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n")
    return path
