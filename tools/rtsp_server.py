#!/usr/bin/python3
"""An RTSP server on loopback serving a live H.264 test stream, like an IP dash camera.

For the recorder's tests and benchmark: run with Debian's /usr/bin/python3 (GStreamer's
Python bindings, python3-gi and gir1.2-gst-rtsp-server-1.0, are system packages), e.g.

    /usr/bin/python3 tools/rtsp_server.py --port 8554 --size 1280x720 --fps 30

serves rtsp://127.0.0.1:8554/cam. The stream is x264enc's (profile main, a keyframe every
``--keyint`` frames, no B-frames), so a recording made from it can be told from one
re-encoded by ffmpeg's libx264. One encoder is shared by every client. It prints
``ready <url>`` on stdout once it listens, and runs until killed.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--keyint", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=2000, help="kbit/s")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    Gst.init(None)
    pipeline = (
        f"( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={width},height={height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=superfast key-int-max={args.keyint} "
        f"bframes=0 bitrate={args.bitrate} "
        f"! video/x-h264,profile=main ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline)
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 75
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
