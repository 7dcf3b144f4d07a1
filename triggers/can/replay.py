"""Replaying a recorded drive through the rules: what would have fired, and when.

Any format python-can's LogReader reads (candump -L .log, .asc, .blf, .trc, .csv …).
Deterministic: the engine only ever sees the log's own timestamps.

A capture is a file from somewhere else: a line python-can cannot read, or a frame with a
timestamp that is not a number, ends the replay with a CaptureError naming the line (the
frame, in a binary format), never with whatever the reader happened to raise
(tests/fuzz/test_fuzz_can.py).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import can
from can.io.generic import TextIOMessageReader
from can.io.player import MESSAGE_READERS

from triggers.can.engine import Fired, RuleEngine, RuleHealth

TICK_S = 0.1  # how often (in log time) signal loss is checked


class CaptureError(ValueError):
    """A capture that cannot be read. ``where`` is ``line N`` (text formats, counted from
    1) or ``frame N`` (binary ones), empty for the file as a whole; ``path`` is the file.
    The message leaves the path out: callers put it in front."""

    def __init__(self, path: Path | str, where: str, problem: str) -> None:
        self.path, self.where, self.problem = str(path), where, problem
        super().__init__(f"{where}: {problem}" if where else problem)


def replay(
    path: Path | str, engine: RuleEngine, *, realtime: bool = False
) -> Iterator[Fired | RuleHealth]:
    """Yield what fires and every health event, in log order. ``realtime`` paces the
    frames at the speed they were recorded. Raises CaptureError (or OSError)."""
    messages = read_capture(path)
    frames = can.MessageSync(messages, timestamps=True) if realtime else messages
    next_tick: float | None = None
    for msg in frames:
        t = msg.timestamp
        if next_tick is None:
            next_tick = t + TICK_S
        if t >= next_tick:
            yield from engine.tick(t)
            next_tick = t + TICK_S
        fired, health = engine.process(
            msg.arbitration_id,
            msg.is_extended_id,
            bytes(msg.data),
            t,
            is_error=msg.is_error_frame,
            is_remote=msg.is_remote_frame,
        )
        yield from health
        yield from fired


def read_capture(path: Path | str) -> Iterator[can.Message]:
    """The frames of a capture, in file order. Raises CaptureError naming the line (or
    frame) that cannot be read, OSError if the file cannot be opened."""
    name = str(path)
    suffix = Path(name).suffix.lower()
    # Vector .asc keeps times relative to a start date in its header unless told otherwise:
    # asked for absolute times, as every other format gives them.
    options: dict[str, Any] = {"relative_timestamp": False} if suffix == ".asc" else {}
    reader_type = MESSAGE_READERS.get(suffix)
    lines: _CountedLines | None = None
    try:
        if reader_type is not None and issubclass(reader_type, TextIOMessageReader):
            # Read through a line counter, so that an error can name its line.
            lines = _CountedLines(Path(name).open("rb"))  # noqa: SIM115
            reader: Any = reader_type(lines, **options)
        else:
            reader = can.LogReader(name, **options)
    except Exception as exc:  # an unknown format, or a header (read here) that is garbage
        if lines is not None:
            lines.close()
        if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile):
            raise
        raise CaptureError(name, "" if lines is None else _where(lines, 0), str(exc)) from None
    count = 0
    try:
        iterator = iter(reader)
        while True:
            try:
                msg = next(iterator)
            except StopIteration:
                return
            # A third-party parser on untrusted input: whatever it raises (ValueError,
            # IndexError, struct.error …) means this line cannot be read; only a failing
            # disk is still an OSError.
            except Exception as exc:
                if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile):
                    raise
                raise CaptureError(name, _where(lines, count), _problem(exc)) from None
            count += 1
            if not isinstance(msg.timestamp, int | float) or not math.isfinite(msg.timestamp):
                raise CaptureError(
                    name,
                    _where(lines, count - 1),
                    f"timestamp {msg.timestamp!r} is not a finite number",
                )
            yield msg
    finally:
        reader.stop()


def _where(lines: _CountedLines | None, frames_read: int) -> str:
    if lines is not None:
        return f"line {max(lines.line, 1)}"
    return f"frame {frames_read + 1}"


def _problem(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason})"
    text = str(exc) or type(exc).__name__
    return f"not a frame python-can can read ({text})"


class _CountedLines:
    """A capture's lines as text, counted as python-can's text readers take them (they
    iterate the file or call ``readline``). Decoded line by line, so that bytes that are
    not UTF-8 are reported on their own line."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.line = 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        raw = next(self._handle)
        self.line += 1
        return _text(raw)

    def readline(self, size: int = -1) -> str:
        raw = self._handle.readline(size)
        if raw:
            self.line += 1
        return _text(raw)

    def close(self) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8")
    return text[:-2] + "\n" if text.endswith("\r\n") else text
