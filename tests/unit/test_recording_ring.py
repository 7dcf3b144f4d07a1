"""The pre-event ring's decisions and the recorder's source grammar and command line."""

from __future__ import annotations

import re

import pytest

from mesh.camera.recording.ring import Span, drop_for_age, drop_for_size, keep_from
from mesh.camera.recording.source import Capture, ffmpeg_command
from mesh.media import SourceKind, parse_resolution, parse_source

S = 1_000_000_000


def ring(n: int, start: int = 100 * S) -> list[Span]:
    """n one-second segments from ``start``, 1,000 bytes each."""
    return [Span(start + i * S, start + (i + 1) * S - S // 30, 1000) for i in range(n)]


def test_the_ring_covers_buffer_s_and_no_more() -> None:
    r = ring(40)
    newest = r[-1].last_ns
    drop = drop_for_age(r, 30, newest)
    kept = r[drop:]
    assert kept[0].first_ns <= newest - 30 * S  # reaches back buffer_s
    assert kept[1].first_ns > newest - 30 * S  # and one segment fewer would not
    assert drop_for_age(r[:5], 30, r[4].last_ns) == 0  # shorter than buffer_s: all kept
    assert drop_for_age(r, 0, newest) == 40  # no buffer at all


def test_the_size_cap_drops_the_oldest_buffer_segments_only() -> None:
    r = ring(10)
    assert drop_for_size(r, 0, None) == 0
    assert drop_for_size(r, 0, 10_000) == 0
    assert drop_for_size(r, 2_500, 10_000) == 3  # recordings and the open segment count
    assert drop_for_size(r, 50_000, 10_000) == 10  # all of them, and still too much


@pytest.mark.parametrize(
    ("pre_event_s", "expected"),
    [
        (0, 10),  # the open segment alone (it holds the frames just before the command)
        (3, 7),  # the newest segment starting at or before command - 3 s
        (3.5, 7),  # exactly at a segment start: that segment
        (3.6, 6),
        (10, 0),
        (60, 0),  # the buffer is shorter: everything it has
    ],
)
def test_a_recording_keeps_the_segments_covering_pre_event_s(
    pre_event_s: float, expected: int
) -> None:
    firsts = [s.first_ns for s in ring(11)]  # 10 closed and the open one
    command = firsts[-1] + S // 2  # half a second into the open segment
    assert keep_from(firsts, command, pre_event_s) == expected
    if expected:
        assert firsts[expected] <= command - int(pre_event_s * S)
    assert keep_from([], command, 5) == 0


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("/dev/video0", SourceKind.DEVICE),
        ("rtsp://192.0.2.10:8554/cam", SourceKind.URL),
        ("rtsps://user:pw@cam.example/stream1", SourceKind.URL),
        ("udp://239.0.0.1:5000", SourceKind.URL),
        ("lavfi:testsrc2", SourceKind.LAVFI),
        ("lavfi:testsrc2=size=1280x720:rate=30", SourceKind.LAVFI),
    ],
)
def test_sources(text: str, kind: SourceKind) -> None:
    assert parse_source(text).kind is kind


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/dev/sda", "a V4L2 device is /dev/videoN"),
        ("lavfi:nosuchsrc", "unknown test source 'nosuchsrc'"),
        ("lavfi:testsrc2;rm -rf", "lavfi:NAME or lavfi:NAME=OPTIONS"),
        ("http://cam/stream", "not /dev/videoN, lavfi:NAME or a URL of"),
        ("rtsp://", "names no host"),
        ("rtsp://cam:99999/x", "not a URL"),
        ("camera", "not /dev/videoN"),
    ],
)
def test_bad_sources_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_source(text)


def test_resolution() -> None:
    assert parse_resolution("1280x720") == (1280, 720)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_resolution("720p")


def test_an_encoded_source_is_copied_and_a_raw_one_encoded_with_short_gops() -> None:
    copy = ffmpeg_command(Capture(parse_source("rtsp://127.0.0.1:8554/cam"), encode=False))
    assert copy[copy.index("-c:v") + 1] == "copy"
    assert "libx264" not in copy
    assert copy[copy.index("-rtsp_transport") + 1] == "tcp"
    raw = ffmpeg_command(
        Capture(parse_source("lavfi:testsrc2"), encode=True, resolution="640x360", fps=25)
    )
    assert raw[raw.index("-i") + 1] == "testsrc2=size=640x360:rate=25,realtime,settb=AVTB"
    assert raw[raw.index("-g") + 1] == "25"  # one keyframe a second: ~1 s segments
    for argv in (copy, raw):  # wall-clock timestamps carried through to the TS
        assert argv[argv.index("-use_wallclock_as_timestamps") + 1] == "1"
        assert "-copyts" in argv
        assert argv[-3:] == ["-f", "mpegts", "pipe:1"]


def test_credentials_are_taken_out_of_any_text() -> None:
    from mesh.media import redact_credentials

    line = "rtsp://admin:s3cret@10.0.0.5:554/live?token=abc&channel=1: 401 Unauthorized"
    assert (
        redact_credentials(line) == "rtsp://10.0.0.5:554/live?token=***&channel=1: 401 Unauthorized"
    )
    assert redact_credentials("/dev/video0: No such device") == "/dev/video0: No such device"
    assert (
        redact_credentials("srt://h:9000?passphrase=x&PASSWORD=y")
        == "srt://h:9000?passphrase=***&PASSWORD=***"
    )
