"""The sources a camera recorder reads, as a config names them (pure: no I/O).

The grammar is here, below mesh.config, so a config file is checked as it is read;
mesh.camera.recording.source turns a source into an ``ffmpeg`` command line.

A source is one of:

- a V4L2 device, ``/dev/videoN`` (USB cameras, capture cards);
- a network URL, ``rtsp://``, ``rtsps://``, ``rtp://``, ``udp://`` or ``srt://`` (IP dash
  cameras): already encoded, recorded as it comes (``-c copy``) unless told to encode;
- an FFmpeg test source, ``lavfi:NAME`` or ``lavfi:NAME=OPTIONS`` (``lavfi:testsrc2``),
  paced to real time with the ``realtime`` filter, for tests and the demo.

Every frame's timestamp is the wall clock when FFmpeg read it
(``-use_wallclock_as_timestamps 1``), kept through the output by ``-copyts``: in the MPEG-TS
the PTS is UTC in 90 kHz ticks modulo 2^33, which the recorder unwraps against its own
clock (:func:`mesh.camera.recording.mpegts.ticks_to_ns`). So a frame's media time is when
it reached this machine, on this machine's clock: the same clock ``command_at_ns`` is read
on. Sources with B-frames are not supported in copy mode (their PTS would be reordered
arrival times).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class SourceKind(StrEnum):
    DEVICE = "device"
    URL = "url"
    LAVFI = "lavfi"


# FFmpeg's video test sources (libavfilter/vsrc_testsrc.c and friends).
LAVFI_SOURCES = frozenset(
    {
        "testsrc",
        "testsrc2",
        "smptebars",
        "smptehdbars",
        "rgbtestsrc",
        "yuvtestsrc",
        "pal75bars",
        "pal100bars",
        "color",
        "mandelbrot",
        "life",
        "cellauto",
    }
)
URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtp", "udp", "srt"})
_DEVICE = re.compile(r"^/dev/video\d{1,3}$")
_LAVFI = re.compile(r"^lavfi:([a-z0-9]+)(?:=([A-Za-z0-9=:._#-]*))?$")
_RESOLUTION = re.compile(r"^(\d{2,5})x(\d{2,5})$")


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    text: str  # as configured
    lavfi_name: str = ""
    lavfi_options: str = ""

    @property
    def encoded(self) -> bool:
        """Already compressed: a network stream (a V4L2 device may be either)."""
        return self.kind is SourceKind.URL


def parse_source(text: str) -> Source:
    """The source a config names, or ValueError saying what is wrong with it."""
    if text.startswith("/dev/"):
        if not _DEVICE.match(text):
            raise ValueError(f"{text!r}: a V4L2 device is /dev/videoN")
        return Source(SourceKind.DEVICE, text)
    if text.startswith("lavfi:"):
        m = _LAVFI.match(text)
        if not m:
            raise ValueError(f"{text!r}: a test source is lavfi:NAME or lavfi:NAME=OPTIONS")
        name = m.group(1)
        if name not in LAVFI_SOURCES:
            known = ", ".join(sorted(LAVFI_SOURCES))
            raise ValueError(f"{text!r}: unknown test source {name!r} (one of {known})")
        return Source(SourceKind.LAVFI, text, name, m.group(2) or "")
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"{text!r}: not a URL ({exc})") from None
    if url.scheme not in URL_SCHEMES:
        raise ValueError(
            f"{text!r}: not /dev/videoN, lavfi:NAME or a URL of {', '.join(sorted(URL_SCHEMES))}"
        )
    if not url.hostname:
        raise ValueError(f"{text!r}: the URL names no host")
    del port
    return Source(SourceKind.URL, text)


def parse_resolution(text: str) -> tuple[int, int]:
    m = _RESOLUTION.match(text)
    if not m:
        raise ValueError(f"{text!r}: a resolution is WIDTHxHEIGHT, e.g. 1280x720")
    return int(m.group(1)), int(m.group(2))


# Query parameters that may hold a secret in a camera's URL.
SECRET_PARAMS = frozenset(
    {
        "user",
        "username",
        "password",
        "pass",
        "passwd",
        "passphrase",
        "pwd",
        "token",
        "key",
        "auth",
        "secret",
    }
)
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_SECRET_QUERY = re.compile(
    r"([?&;](?:" + "|".join(sorted(SECRET_PARAMS)) + r")=)[^&\s]*", re.IGNORECASE
)


def redact_credentials(text: str) -> str:
    """``text`` (an ffmpeg error line, say) with every URL's user name and password and
    every secret query parameter taken out: what a camera says about its source goes into
    acks, presence and the gateway's log, where a password must never be."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1", text))
