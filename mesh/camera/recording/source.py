"""What the FFmpeg recorder reads and the ``ffmpeg`` command line that reads it (pure).

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


@dataclass(frozen=True)
class Capture:
    """How to read the source and what to write: everything the command line needs."""

    source: Source
    encode: bool  # False: -c copy
    resolution: str | None = None  # WIDTHxHEIGHT, for lavfi/V4L2 capture and encoding
    fps: int = 30
    segment_s: float = 1.0  # the GOP when encoding
    preset: str = "ultrafast"
    bitrate: str | None = None  # e.g. "4M"; None: x264's default rate control (crf 23)
    rw_timeout_s: float = 5.0  # network sources: give up on a silent socket after this


def ffmpeg_command(capture: Capture, ffmpeg: str = "ffmpeg") -> list[str]:
    """The argv of one ffmpeg that writes the source as MPEG-TS on stdout, timestamps in
    wall-clock time, keyframes every ``segment_s`` when encoding."""
    src = capture.source
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error"]
    argv += ["-use_wallclock_as_timestamps", "1", "-fflags", "+nobuffer"]
    if src.kind is SourceKind.LAVFI:
        opts = src.lavfi_options
        if capture.resolution and "size=" not in opts and "s=" not in opts:
            opts = ":".join(o for o in (opts, f"size={capture.resolution}") if o)
        if "rate=" not in opts and "r=" not in opts:
            opts = ":".join(o for o in (opts, f"rate={capture.fps}") if o)
        argv += ["-f", "lavfi", "-i", f"{src.lavfi_name}={opts},realtime"]
    elif src.kind is SourceKind.DEVICE:
        argv += ["-f", "v4l2", "-framerate", str(capture.fps)]
        if capture.resolution:
            argv += ["-video_size", capture.resolution]
        argv += ["-i", src.text]
    else:
        if src.text.startswith(("rtsp://", "rtsps://")):
            argv += ["-rtsp_transport", "tcp", "-timeout", str(int(capture.rw_timeout_s * 1e6))]
        argv += ["-i", src.text]
    argv += ["-map", "0:v:0", "-an", "-sn", "-dn"]
    if capture.encode:
        gop = max(1, round(capture.fps * capture.segment_s))
        argv += ["-c:v", "libx264", "-preset", capture.preset, "-tune", "zerolatency"]
        argv += ["-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop)]
        argv += ["-sc_threshold", "0", "-bf", "0"]
        if capture.bitrate:
            argv += ["-b:v", capture.bitrate, "-maxrate", capture.bitrate]
            argv += ["-bufsize", capture.bitrate]
        if capture.resolution and src.kind is SourceKind.URL:
            argv += ["-s", capture.resolution]
    else:
        argv += ["-c:v", "copy"]
    argv += ["-fps_mode", "passthrough", "-copyts", "-muxdelay", "0", "-muxpreload", "0"]
    argv += ["-omit_video_pes_length", "0", "-flush_packets", "1", "-f", "mpegts", "pipe:1"]
    return argv
