"""The MPEG-TS splitter (pure): segments cut at keyframes, each starting with PAT and PMT;
frames whole as soon as their PES length is reached; any chunking gives the same result."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.camera.recording.mpegts import (
    PACKET,
    WRAP,
    Cut,
    Data,
    FrameDone,
    Piece,
    TsSplitter,
    parse_pts,
    ticks_to_ns,
)

VIDEO_PID = 0x100
PMT_PID = 0x1000


def _packet(pid: int, payload: bytes, *, pusi: bool = False, rai: bool = False) -> bytes:
    """One 188-byte packet; the adaptation field stuffs a short payload (and carries RAI)."""
    room = PACKET - 4
    assert len(payload) <= room
    head = bytes([0x47, (0x40 if pusi else 0) | pid >> 8, pid & 0xFF])
    if len(payload) == room and not rai:
        return head + bytes([0x10]) + payload
    alen = room - 1 - len(payload)  # the adaptation field's length byte excluded
    assert alen >= (1 if rai else 0)
    field = b"" if alen == 0 else bytes([0x40 if rai else 0]) + b"\xff" * (alen - 1)
    return head + bytes([0x30, alen]) + field + payload


def _section(table: int, body: bytes) -> bytes:
    length = len(body) + 5 + 4  # after the length field: 5 header bytes, body, CRC
    return (
        bytes([0, table, 0xB0 | length >> 8, length & 0xFF, 0, 1, 0xC1, 0, 0]) + body + b"\0\0\0\0"
    )


PAT = _packet(0, _section(0x00, bytes([0, 1, 0xE0 | PMT_PID >> 8, PMT_PID & 0xFF])), pusi=True)
PMT = _packet(
    PMT_PID,
    _section(0x02, bytes([0xE1, 0x00, 0xF0, 0x00, 0x1B, 0xE1, 0x00, 0xF0, 0x00])),
    pusi=True,
)


def _pts_bytes(pts: int) -> bytes:
    return bytes(
        [
            0x21 | (pts >> 29) & 0x0E,
            (pts >> 22) & 0xFF,
            0x01 | (pts >> 14) & 0xFE,
            (pts >> 7) & 0xFF,
            0x01 | (pts << 1) & 0xFE,
        ]
    )


def frame(pts: int, size: int, *, key: bool, rai: bool = True, length: bool = True) -> bytes:
    """The packets of one video frame: a PES with a PTS and ``size`` bytes of H.264."""
    nal = b"\x00\x00\x00\x01" + (b"\x65" if key else b"\x41")
    es = nal + bytes(range(256)) * (size // 256 + 1)
    es = es[:size]
    header = b"\x80\x80\x05" + _pts_bytes(pts)
    pes_len = len(header) + len(es) if length else 0
    pes = b"\x00\x00\x01\xe0" + bytes([pes_len >> 8, pes_len & 0xFF]) + header + es
    out = []
    first = True
    while pes:
        room = PACKET - 4 - (2 if first and key and rai else 0)
        chunk, pes = pes[:room], pes[room:]
        out.append(_packet(VIDEO_PID, chunk, pusi=first, rai=first and key and rai))
        first = False
    return b"".join(out)


def stream(frames: int, fps: int = 10, gop: int = 10, start: int = 0, **kw: bool) -> bytes:
    """PAT and PMT before every frame, as ffmpeg's pat_pmt_at_frames would write."""
    step = 90_000 // fps
    return b"".join(
        PAT + PMT + frame(start + i * step, 700 + 37 * i, key=i % gop == 0, **kw)
        for i in range(frames)
    )


def run(data: bytes, chunks: list[int] | None = None, segment_s: float = 1.0) -> list[Piece]:
    s = TsSplitter(segment_s)
    out: list[Piece] = []
    i = 0
    for size in chunks or []:
        out += s.feed(data[i : i + size])
        i += size
    out += s.feed(data[i:])
    return normalise(out)


def normalise(pieces: list[Piece]) -> list[Piece]:
    """Adjacent Data joined: how the bytes were chunked is not part of the result."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + p.data)
        else:
            out.append(p)
    return out


def segments(pieces: list[Piece]) -> list[bytes]:
    segs: list[bytearray] = []
    for p in pieces:
        if isinstance(p, Cut):
            segs.append(bytearray())
        elif isinstance(p, Data):
            segs[-1] += p.data
    return [bytes(s) for s in segs]


def test_segments_begin_at_keyframes_with_pat_and_pmt() -> None:
    data = stream(35)  # 10 fps, a keyframe every second
    pieces = run(data)
    cuts = [p.pts for p in pieces if isinstance(p, Cut)]
    assert cuts == [0, 90_000, 180_000, 270_000]
    segs = segments(pieces)
    for seg in segs:
        assert seg[:PACKET] == PAT
        assert seg[PACKET : 2 * PACKET] == PMT
        assert seg[2 * PACKET + 1] & 0x40  # the keyframe's PES starts right after
    assert b"".join(segs) == data  # every byte placed, in order, none twice
    done = [p for p in pieces if isinstance(p, FrameDone)]
    assert len(done) == 35
    assert [p.keyframe for p in done][:11] == [True] + [False] * 9 + [True]


def test_a_frame_is_whole_once_its_pes_length_is_reached() -> None:
    s = TsSplitter(1.0)
    pieces = s.feed(PAT + PMT + frame(0, 3000, key=True))
    # No later packet needed: the PES length says the frame is complete.
    assert isinstance(pieces[-1], FrameDone)
    assert pieces[-1] == FrameDone(0, keyframe=True)


def test_without_a_pes_length_a_frame_is_whole_at_the_next_frame() -> None:
    s = TsSplitter(1.0)
    first = s.feed(PAT + PMT + frame(0, 3000, key=True, length=False))
    assert not any(isinstance(p, FrameDone) for p in first)
    second = s.feed(frame(9000, 500, key=False, length=False))
    assert FrameDone(0, keyframe=True) in second


def test_keyframes_are_found_in_h264_without_random_access_indicator() -> None:
    pieces = run(stream(25, rai=False))
    assert [p.pts for p in pieces if isinstance(p, Cut)] == [0, 90_000, 180_000]


def test_a_segment_is_cut_at_the_first_keyframe_three_quarters_of_segment_s_on() -> None:
    # keyframes every 0.5 s; 1 s segments: every other keyframe starts one
    pieces = run(stream(30, gop=5))
    assert [p.pts for p in pieces if isinstance(p, Cut)] == [0, 90_000, 180_000]
    # 2 s segments with 1 s keyframes: jitter of a few ticks still cuts at 2 s
    pieces = run(stream(45), segment_s=2.0)
    assert [p.pts for p in pieces if isinstance(p, Cut)] == [0, 180_000, 360_000]


def test_bytes_before_the_first_keyframe_are_dropped_and_resync_waits_for_one() -> None:
    data = stream(25, start=0)
    tail = data[len(PAT + PMT + frame(0, 700, key=True)) :]  # starts on a P-frame
    pieces = run(tail)
    cuts = [p.pts for p in pieces if isinstance(p, Cut)]
    assert cuts == [90_000, 180_000]
    s = TsSplitter(1.0)
    s.feed(data[: len(data) // 3])
    s.resync()
    assert not s.in_segment
    later = s.feed(data[len(data) // 3 :])
    assert isinstance(next(p for p in later if not isinstance(p, FrameDone)), Cut)


@given(st.lists(st.integers(min_value=1, max_value=700), max_size=40))
def test_any_chunking_gives_the_same_pieces(chunks: list[int]) -> None:
    data = stream(22)
    assert run(data, chunks) == run(data)


def test_garbage_between_packets_is_skipped() -> None:
    data = stream(12)
    s = TsSplitter(1.0)
    pieces = normalise(s.feed(b"\x00\x01junk" + data))
    assert s.lost_sync == 6
    assert b"".join(segments(pieces)) == data


def test_pts_round_trip_and_unwrapping_against_the_clock() -> None:
    for pts in (0, 1, 90_000, WRAP - 1, 0x1_2345_6789):
        assert parse_pts(_pts_bytes(pts)) == pts
    now_ns = 1_796_392_389_492_249_648
    ticks = now_ns * 9 // 100_000
    assert abs(ticks_to_ns(ticks % WRAP, now_ns) - now_ns) < 20_000
    # a frame stamped 2 s ago, or 2 s ahead, across a wrap of the 33 bits
    near = (ticks // WRAP + 1) * WRAP * 100_000 // 9 + 1_000_000_000  # 1 s after a wrap
    before = near - 2_000_000_000
    assert abs(ticks_to_ns((before * 9 // 100_000) % WRAP, near) - before) < 20_000
    assert abs(ticks_to_ns((near * 9 // 100_000) % WRAP, before) - near) < 20_000


def test_a_segment_gets_the_last_pat_and_pmt_when_the_stream_repeats_them_rarely() -> None:
    data = PAT + PMT + b"".join(frame(i * 9000, 600, key=i % 10 == 0) for i in range(25))
    segs = segments(run(data))
    assert len(segs) == 3
    for seg in segs:
        assert seg[:PACKET] == PAT
        assert seg[PACKET : 2 * PACKET] == PMT
