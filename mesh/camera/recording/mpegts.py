"""Cut an MPEG transport stream into segments at keyframes, and say when each frame is whole.

Pure: bytes in, pieces out (no I/O, no clock). The FFmpeg recorder feeds it what
``ffmpeg -f mpegts pipe:1`` writes and acts on the pieces in order:

- :class:`Data`: bytes that belong to the open segment (write them to its file);
- :class:`Cut`: the open segment ends here, a new one begins (at a keyframe; its first
  bytes are the PAT and PMT, so every segment plays on its own);
- :class:`FrameDone`: every byte of this frame is in the Data already given.

A frame is one PES packet of the video stream (FFmpeg writes one per frame). It is whole
when its PES length is reached (``-omit_video_pes_length 0`` makes FFmpeg write lengths up
to 65,535 bytes) or, for a longer one, when the next PES of the stream begins. Keyframes are
the PES starts whose adaptation field sets ``random_access_indicator`` (FFmpeg's muxer sets
it on key packets) or, for H.264, whose first bytes hold an IDR slice or an SPS.

Timestamps stay in 90 kHz ticks modulo 2^33, as on the wire; :func:`ticks_to_ns` unwraps
them against a clock reading.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKET = 188
SYNC = 0x47
TICKS_PER_S = 90_000
WRAP = 1 << 33  # PTS are 33 bits: they wrap every 26.5 hours
PAT_PID = 0
NULL_PID = 0x1FFF
# PMT stream types of video codecs.
_VIDEO_TYPES = {0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xEA}
_H264 = 0x1B


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class Cut:
    pts: int  # the new segment's first frame (a keyframe)


@dataclass(frozen=True)
class FrameDone:
    pts: int
    keyframe: bool


Piece = Data | Cut | FrameDone


def ticks_to_ns(pts: int, near_ns: int) -> int:
    """The UTC nanoseconds of a 33-bit 90 kHz timestamp that carries the wall clock: the
    value congruent to ``pts`` modulo 2^33 ticks nearest to ``near_ns`` (unambiguous while
    the two are within 13 hours of each other)."""
    near = near_ns * 9 // 100_000
    ticks = pts + round((near - pts) / WRAP) * WRAP
    return ticks * 100_000 // 9


def parse_pts(b: bytes | memoryview) -> int:
    """The 33-bit timestamp of the five bytes of a PES header's PTS field."""
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def _h264_key(payload: bytes) -> bool:
    """An IDR slice (5) or an SPS (7) among the NAL units that begin in ``payload``."""
    i = payload.find(b"\x00\x00\x01")
    while 0 <= i < len(payload) - 3:
        kind = payload[i + 3] & 0x1F
        if kind in (5, 7):
            return True
        if kind == 1:  # a non-IDR slice: the access unit is not a keyframe
            return False
        i = payload.find(b"\x00\x00\x01", i + 3)
    return False


class TsSplitter:
    """Feed it the stream in any chunks; get the pieces for the bytes it could place."""

    def __init__(self, segment_s: float) -> None:
        # A segment ends at the first keyframe at least 3/4 of segment_s after its first
        # frame: wall-clock timestamps jitter, and a 1 s GOP must make 1 s segments.
        self.min_ticks = int(segment_s * TICKS_PER_S * 3 / 4)
        self._rest = b""
        self._pmt_pid: int | None = None
        self._video_pid: int | None = None
        self._video_type = 0
        self._pat: bytes | None = None
        self._pmt: bytes | None = None
        self._held: list[bytes] = []  # PAT/PMT packets waiting for the next other packet
        self._segment_first: int | None = None  # None: no segment open, wait for a keyframe
        self._frame: tuple[int, bool] | None = None  # the frame being received
        self._remaining: int | None = None  # its PES bytes still to come, if known
        self.lost_sync = 0  # bytes skipped to find a sync byte again

    def resync(self) -> None:
        """The open segment ends now (the recorder closed it): bytes are dropped until the
        next keyframe begins a new one."""
        self._segment_first = None

    @property
    def in_segment(self) -> bool:
        return self._segment_first is not None

    def feed(self, chunk: bytes) -> list[Piece]:
        data = self._rest + chunk if self._rest else chunk
        out: list[Piece] = []
        pending = bytearray()
        i, end = 0, len(data)
        while end - i >= PACKET:
            if data[i] != SYNC:
                j = data.find(bytes([SYNC]), i + 1)
                j = end if j < 0 else j
                self.lost_sync += j - i
                i = j
                continue
            self._packet(data[i : i + PACKET], out, pending)
            i += PACKET
        self._rest = data[i:]
        if pending:
            out.append(Data(bytes(pending)))
        return out

    # --- one packet ---------------------------------------------------------------------
    def _packet(self, p: bytes, out: list[Piece], pending: bytearray) -> None:
        pid = (p[1] & 0x1F) << 8 | p[2]
        pusi = bool(p[1] & 0x40)
        afc = (p[3] >> 4) & 3
        off = 4
        rai = False
        if afc & 2:
            alen = p[4]
            rai = alen > 0 and bool(p[5] & 0x40)
            off = 5 + alen
        payload = p[off:] if afc & 1 and off < PACKET else b""
        if pid == NULL_PID:
            return
        if pid in (PAT_PID, self._pmt_pid):
            if pusi and payload:
                self._psi(pid, payload, p)
            self._held.append(p)
            return
        if pid == self._video_pid and pusi and payload[:3] == b"\x00\x00\x01":
            self._finish_frame(out, pending)
            pts = self._pes_start(payload, rai)
            if pts is not None:
                assert self._frame is not None
                key = self._frame[1]
                first = self._segment_first
                if key and (first is None or (pts - first) % WRAP >= self.min_ticks):
                    self._cut(pts, out, pending)
        self._emit(p, pending)
        if pid == self._video_pid and self._remaining is not None:
            if not pusi:
                self._remaining -= len(payload)
            if self._remaining <= 0:
                self._finish_frame(out, pending)

    def _emit(self, p: bytes, pending: bytearray) -> None:
        if self._segment_first is None:
            self._held.clear()
            return
        for held in self._held:
            pending += held
        self._held.clear()
        pending += p

    def _cut(self, pts: int, out: list[Piece], pending: bytearray) -> None:
        if pending:
            out.append(Data(bytes(pending)))
            pending.clear()
        out.append(Cut(pts))
        self._segment_first = pts
        if not self._held or self._held[0][1:3] != b"\x40\x00":  # no PAT/PMT leading it
            self._held[:0] = [h for h in (self._pat, self._pmt) if h is not None]

    def _finish_frame(self, out: list[Piece], pending: bytearray) -> None:
        if self._frame is None:
            return
        pts, key = self._frame
        self._frame, self._remaining = None, None
        if self._segment_first is None:
            return  # dropped with its segment
        if pending:
            out.append(Data(bytes(pending)))
            pending.clear()
        out.append(FrameDone(pts, key))

    def _pes_start(self, payload: bytes, rai: bool) -> int | None:
        if len(payload) < 14 or not payload[7] & 0x80:
            return None  # no PTS: not a frame we can place in time
        pts = parse_pts(payload[9:14])
        header = 9 + payload[8]
        key = rai or (self._video_type == _H264 and _h264_key(payload[header:]))
        self._frame = (pts, key)
        length = payload[4] << 8 | payload[5]
        # The PES length counts the bytes after the length field.
        self._remaining = length - (len(payload) - 6) if length else None
        return pts

    def _psi(self, pid: int, payload: bytes, packet: bytes) -> None:
        start = 1 + payload[0]  # pointer field
        s = payload[start:]
        if len(s) < 12:
            return
        length = (s[1] & 0x0F) << 8 | s[2]
        body = s[: 3 + length - 4]  # without the CRC
        if pid == PAT_PID and s[0] == 0x00:
            self._pat = packet
            for k in range(8, len(body) - 3, 4):
                program = body[k] << 8 | body[k + 1]
                if program != 0:
                    self._pmt_pid = (body[k + 2] & 0x1F) << 8 | body[k + 3]
                    break
        elif pid == self._pmt_pid and s[0] == 0x02:
            self._pmt = packet
            info = (s[10] & 0x0F) << 8 | s[11]
            k = 12 + info
            while k + 5 <= len(body):
                kind = body[k]
                es_pid = (body[k + 1] & 0x1F) << 8 | body[k + 2]
                es_info = (body[k + 3] & 0x0F) << 8 | body[k + 4]
                if kind in _VIDEO_TYPES and self._video_pid in (None, es_pid):
                    self._video_pid, self._video_type = es_pid, kind
                    break
                k += 5 + es_info
