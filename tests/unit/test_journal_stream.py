"""``$JOURNAL_STREAM`` (docs/observability.md, "Logs"): systemd's "<device>:<inode>" of the
stream it gave the service. Only that exact form, naming this very stream, turns on the
``<N>`` priority prefixes; anything else means "not the journal": no prefix, no error."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import pytest
import structlog

from mesh.ops import logs
from mesh.ops.logs import journal_stream_matches

DEV, INO = 2049, 1234

MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("2049", id="no-colon"),
    pytest.param("2049:", id="no-inode"),
    pytest.param(":1234", id="no-device"),
    pytest.param(":", id="colon-only"),
    pytest.param("a:b", id="letters"),
    pytest.param("0x801:1234", id="hex"),
    pytest.param("2049:1234x", id="trailing-letter"),
    pytest.param("-2049:1234", id="negative"),
    pytest.param("+2049:1234", id="plus-sign"),
    pytest.param("2049.0:1234", id="decimal-point"),
    pytest.param(" 2049:1234", id="leading-space"),
    pytest.param("2049:1234 ", id="trailing-space"),
    pytest.param("2049:1234\n", id="trailing-newline"),
    pytest.param("2049 : 1234", id="spaces-around-colon"),
    pytest.param("2049:1234:5", id="extra-field"),
    pytest.param("1:2049:1234", id="extra-field-first"),
    pytest.param("2049::1234", id="double-colon"),
    pytest.param("2049;1234", id="semicolon"),
    pytest.param("2_049:1_234", id="underscores"),  # int() would take these
    # str.isdigit() says yes to these; int() fails on the first, reads 2049 from the second.
    pytest.param("²⁰⁴⁹:1234", id="superscript-digits"),
    pytest.param("٢٠٤٩:1234", id="arabic-indic-digits"),
    pytest.param("２０４９:1234", id="fullwidth-digits"),
]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_value_is_not_the_journal(value: str) -> None:
    assert journal_stream_matches(value, DEV, INO) is False


def test_unset_is_not_the_journal() -> None:
    assert journal_stream_matches(None, DEV, INO) is False


def test_only_this_device_and_inode_match() -> None:
    assert journal_stream_matches(f"{DEV}:{INO}", DEV, INO)
    assert not journal_stream_matches(f"{DEV}:{INO + 1}", DEV, INO)  # inherited, not ours
    assert not journal_stream_matches(f"{DEV + 1}:{INO}", DEV, INO)
    assert not journal_stream_matches(f"{INO}:{DEV}", DEV, INO)
    # Leading zeros are still the same decimal numbers.
    assert journal_stream_matches(f"0{DEV}:00{INO}", DEV, INO)
    big = 2**64 - 1  # st_dev and st_ino are 64-bit on Linux
    assert journal_stream_matches(f"{big}:{big}", big, big)


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    """A real pipe (reader, writer), as systemd gives a service a socket: its own inode."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r")
    writer = os.fdopen(write_fd, "w")
    try:
        yield reader, writer
    finally:
        for end in (reader, writer):
            if not end.closed:
                end.close()
        logs.configure("console", "warning")  # as tests/conftest.py left it


def _of(stream: io.TextIOWrapper) -> str:
    st = os.fstat(stream.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_the_fstat_of_a_real_pipe_matches_its_own_value_only() -> None:
    first_r, first_w = os.pipe()
    second_r, second_w = os.pipe()
    try:
        st = os.fstat(first_w)
        other = os.fstat(second_w)
        assert journal_stream_matches(f"{st.st_dev}:{st.st_ino}", st.st_dev, st.st_ino)
        # Both ends of a pipe are the one inode; another pipe is another.
        assert journal_stream_matches(f"{st.st_dev}:{st.st_ino}", *_dev_ino(os.fstat(first_r)))
        assert not journal_stream_matches(f"{other.st_dev}:{other.st_ino}", st.st_dev, st.st_ino)
    finally:
        for fd in (first_r, first_w, second_r, second_w):
            os.close(fd)


def _dev_ino(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _written(
    pipe: tuple[io.TextIOWrapper, io.TextIOWrapper],
    journal_stream: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Configure JSON logs onto the pipe with this ``$JOURNAL_STREAM``, log a warning, and
    return the lines that came out."""
    reader, writer = pipe
    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    logs.configure("json", "info", stream=writer)
    structlog.get_logger("mesh.test").warning("something to say", n=1)
    writer.close()
    return reader.read().splitlines()


def test_a_pipe_named_by_journal_stream_gets_priorities(
    pipe: tuple[io.TextIOWrapper, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    (line,) = _written(pipe, _of(pipe[1]), monkeypatch)
    assert line.startswith("<4>{"), line
    record = json.loads(line[3:])
    assert (record["event"], record["level"], record["logger"]) == (
        "something to say",
        "warning",
        "mesh.test",
    )


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_value_leaves_the_lines_unprefixed(
    pipe: tuple[io.TextIOWrapper, io.TextIOWrapper], value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (line,) = _written(pipe, value, monkeypatch)
    assert json.loads(line)["event"] == "something to say"


def test_no_journal_stream_leaves_the_lines_unprefixed(
    pipe: tuple[io.TextIOWrapper, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    (line,) = _written(pipe, None, monkeypatch)
    assert json.loads(line)["event"] == "something to say"


def test_a_value_naming_another_stream_leaves_the_lines_unprefixed(
    pipe: tuple[io.TextIOWrapper, io.TextIOWrapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    st = os.fstat(pipe[1].fileno())
    (line,) = _written(pipe, f"{st.st_dev}:{st.st_ino + 1}", monkeypatch)
    assert json.loads(line)["event"] == "something to say"
