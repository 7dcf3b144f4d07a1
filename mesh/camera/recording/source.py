"""The ``ffmpeg`` command line that reads a camera's source (pure).

See :mod:`mesh.media` for the sources and how their timestamps carry the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.media import Source, SourceKind


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
        # realtime: paced to the clock; settb: the stream's time base is the microsecond
        # (the wall-clock stamp would otherwise be rounded to a frame period, and could
        # name a time still to come).
        argv += ["-f", "lavfi", "-i", f"{src.lavfi_name}={opts},realtime,settb=AVTB"]
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
        # The encoder's time base would be 1/fps: wall-clock stamps rounded to a frame.
        argv += ["-enc_time_base:v", "1:90000"]
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
