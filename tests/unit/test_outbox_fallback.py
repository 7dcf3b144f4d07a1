"""An outbox whose file cannot be opened (mesh/gateway/outbox.py): held in memory, bounded,
moved back into its file once it opens; the forwarder's part (mesh/gateway/forwarder.py)
and the health decision. The file is made unopenable here by a regular file where its
directory must be (the directory cannot be created); the real fault, a disk with no free
byte under a running gateway, is tests/chaos/test_chaos_outbox_disk_full.py."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mesh.clock import SYSTEM_CLOCK
from mesh.gateway import forwarder as forwarder_module
from mesh.gateway import outbox as outbox_module
from mesh.gateway.forwarder import Forwarder, reopen_pauses
from mesh.gateway.outbox import Outbox, OutboxError
from mesh.ops import logs
from mesh.ops.health import GatewayState, Status, gateway_health


def _block(directory: Path) -> Path:
    """Make ``directory`` impossible to create: a regular file takes its name. Returns the
    outbox's path inside it."""
    directory.write_bytes(b"in the way")
    return directory / "gw.outbox"


def _unblock(directory: Path) -> None:
    directory.unlink()


def _topics(box: Outbox) -> list[str]:
    return [q.topic for q in box.head(1000)]


# --- the outbox ----------------------------------------------------------------------------


def test_an_outbox_whose_file_cannot_be_opened_is_held_in_memory(tmp_path: Path) -> None:
    path = _block(tmp_path / "var")
    box = Outbox(path)  # the gateway starts: no OutboxError
    try:
        assert not box.durable
        assert box.fallback_error is not None
        assert str(path) in box.fallback_error
        ids = [box.put(f"t/{n}", f"m{n}".encode(), now_ns=n) for n in range(3)]
        box.put_final("a-1", b"outcome", [("t/record", b"r")], now_ns=3)
        assert _topics(box) == ["t/0", "t/1", "t/2", "t/record"]
        assert box.depth() == 4
        assert box.queued_final("a-1") == b"outcome"
        assert box.oldest_queued_at_ns() == 0
        box.remove(ids[:2])
        assert _topics(box) == ["t/2", "t/record"]
        assert not path.exists()
    finally:
        box.close()


def test_a_path_that_is_a_directory_is_held_in_memory_too(tmp_path: Path) -> None:
    path = tmp_path / "gw.outbox"
    path.mkdir()
    box = Outbox(path)
    try:
        assert not box.durable
        assert box.fallback_error is not None
        assert str(path) in box.fallback_error
    finally:
        box.close()


def test_in_memory_it_is_bounded_and_refuses_beyond(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "MEMORY_MAX", 5)
    box = Outbox(_block(tmp_path / "var"))
    try:
        for n in range(4):
            box.put(f"t/{n}", b"m", now_ns=n)
        # An outcome whose messages would go past the limit: refused whole.
        with pytest.raises(OutboxError, match=r"held in memory .* full \(4 of 5 entries\)"):
            box.put_final("a-1", b"outcome", [("t/rec", b"r"), ("t/esc", b"e")], now_ns=4)
        assert box.queued_final("a-1") is None
        assert box.finals() == 0
        box.put_final("a-1", b"outcome", [("t/rec", b"r")], now_ns=4)  # exactly fits
        with pytest.raises(OutboxError, match="cannot queue for t/late"):
            box.put("t/late", b"m", now_ns=5)
        assert box.depth() == 5
        assert _topics(box) == ["t/0", "t/1", "t/2", "t/3", "t/rec"]
        box.remove([box.head(1)[0].id])  # one delivered: room for one again
        box.put("t/later", b"m", now_ns=6)
        assert box.depth() == 5
    finally:
        box.close()


def test_the_limit_is_memorys_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "MEMORY_MAX", 5)
    box = Outbox(tmp_path / "gw.outbox")
    try:
        assert box.durable
        for n in range(8):
            box.put(f"t/{n}", b"m", now_ns=n)
        assert box.depth() == 8
    finally:
        box.close()


def test_reopen_moves_what_memory_holds_into_the_file_after_its_own_entries(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "var"
    path = directory / "gw.outbox"
    # An earlier run left two entries and an outcome in the file.
    earlier = Outbox(path)
    earlier.put("t/old-1", b"o1", now_ns=1)
    earlier.put_final("a-old", b"old outcome", [("t/old-2", b"o2")], now_ns=2)
    earlier.put_final("a-both", b"outcome from the file", [], now_ns=2)
    earlier.close()
    # This run cannot open it: everything waits in memory.
    directory.rename(tmp_path / "var.away")
    _block(directory)
    box = Outbox(path)
    try:
        assert not box.durable
        memory_ids = [box.put(f"t/new-{n}", f"n{n}".encode(), now_ns=10 + n) for n in range(3)]
        box.put_final(
            "a-new", b"new outcome", [("t/new-rec", b"r"), ("t/new-esc", b"e")], now_ns=20
        )
        box.put_final("a-both", b"outcome from memory", [], now_ns=21)
        box.remove(memory_ids[:1])  # delivered meanwhile: not moved
        # Still blocked: nothing moves, memory keeps everything.
        assert box.reopen() is None
        assert not box.durable
        assert box.depth() == 4

        _unblock(directory)
        (tmp_path / "var.away").rename(directory)
        moved = box.reopen()

        assert moved is not None
        assert box.durable
        assert box.fallback_error is None
        expected = ["t/old-1", "t/old-2", "t/new-1", "t/new-2", "t/new-rec", "t/new-esc"]
        assert _topics(box) == expected
        assert box.depth() == 6
        head = box.head(10)
        # Each moved entry's id in memory -> its id in the file, in the order queued.
        assert sorted(moved) == [memory_ids[1], memory_ids[2], memory_ids[2] + 1, memory_ids[2] + 2]
        assert [moved[i] for i in sorted(moved)] == [q.id for q in head[2:]]
        assert [q.payload for q in head[2:4]] == [b"n1", b"n2"]
        assert [q.queued_at_ns for q in head] == [1, 2, 11, 12, 20, 20]
        assert box.finals() == 3
        assert box.queued_final("a-old") == b"old outcome"
        assert box.queued_final("a-new") == b"new outcome"
        assert box.queued_final("a-both") == b"outcome from memory"  # the newer one
        box.put("t/after", b"x", now_ns=30)
    finally:
        box.close()
    # In the file now: a restart finds it all.
    again = Outbox(path)
    try:
        assert again.durable
        assert _topics(again) == [*expected, "t/after"]
        assert again.finals() == 3
    finally:
        again.close()


def test_reopen_keeps_at_most_finals_max_outcomes_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "FINALS_MAX", 4)
    directory = tmp_path / "var"
    path = directory / "gw.outbox"
    earlier = Outbox(path)
    for n in range(3):
        earlier.put_final(f"a-file-{n}", b"f", [], now_ns=n)
    earlier.close()
    directory.rename(tmp_path / "var.away")
    _block(directory)
    box = Outbox(path)
    try:
        for n in range(3):
            box.put_final(f"a-mem-{n}", b"m", [], now_ns=10 + n)
        _unblock(directory)
        (tmp_path / "var.away").rename(directory)
        assert box.reopen() == {}  # no entries moved, only outcomes
        assert box.finals() == 4
        assert box.queued_final("a-file-0") is None
        assert box.queued_final("a-file-1") is None
        assert box.queued_final("a-file-2") == b"f"
        assert all(box.queued_final(f"a-mem-{n}") == b"m" for n in range(3))
    finally:
        box.close()


def test_reopen_of_an_outbox_in_its_file_moves_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "gw.outbox")
    try:
        box.put("t/0", b"m", now_ns=0)
        assert box.reopen() == {}
        assert box.durable
        assert _topics(box) == ["t/0"]
    finally:
        box.close()


# --- the forwarder -------------------------------------------------------------------------


@pytest.fixture
def info_logs() -> Iterator[None]:
    """Info lines too (the session's logs show warnings and worse: tests/conftest.py)."""
    logs.configure("console", "info")
    yield
    logs.configure("console", "warning")


class _DownLink:
    """A broker link that is down: what the forwarder is handed and never sends on here."""

    is_up = False

    def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        raise AssertionError(f"nothing may be sent without queuing here: {topic}")


def test_the_forwarder_says_so_once_and_counts_it(tmp_path: Path) -> None:
    path = _block(tmp_path / "var")
    box = Outbox(path)
    try:
        with capture_logs() as logged:
            forwarder = Forwarder(_DownLink(), box, SYSTEM_CLOCK)  # type: ignore[arg-type]
        errors = [e for e in logged if e["log_level"] == "error"]
        assert len(errors) == 1
        assert errors[0]["path"] == str(path)
        assert errors[0]["error"] == box.fallback_error
        assert forwarder.counters["outbox.memory_fallbacks"] == 1
        forwarder.deliver("t/receipt", b"r")  # queued in memory, not sent without it
        assert box.depth() == 1
    finally:
        box.close()


def test_a_durable_outbox_is_not_reported(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "gw.outbox")
    try:
        with capture_logs() as logged:
            forwarder = Forwarder(_DownLink(), box, SYSTEM_CLOCK)  # type: ignore[arg-type]
        assert logged == []
        assert forwarder.counters["outbox.memory_fallbacks"] == 0
    finally:
        box.close()


@pytest.mark.usefixtures("info_logs")
async def test_the_forwarder_tries_the_file_again_until_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "var"
    box = Outbox(_block(directory))
    try:
        with capture_logs() as logged:
            forwarder = Forwarder(_DownLink(), box, SYSTEM_CLOCK)  # type: ignore[arg-type]
            forwarder.deliver("t/receipt", b"r")
            first = box.head(1)[0].id
            forwarder._tries[first] = 3  # refused three times so far: kept under its new id
            assert not forwarder.reopen()
            assert forwarder.counters["outbox.reopen_failures"] == 1
            _unblock(directory)
            monkeypatch.setattr(forwarder_module, "REOPEN_FIRST_S", 0.0)
            await asyncio.wait_for(forwarder._reopen_loop(), 5)
        assert box.durable
        assert forwarder.counters["outbox.reopened"] == 1
        assert [(e["log_level"], e["event"]) for e in logged] == [
            (
                "error",
                "outbox file cannot be opened; messages wait in memory until it can, "
                "and are lost if the gateway stops first",
            ),
            ("info", "outbox file open again: messages queued in memory moved into it"),
        ]
        assert logged[-1]["moved"] == 1
        assert forwarder._tries == {box.head(1)[0].id: 3}
        assert forwarder.reopen()  # in its file: nothing more to do
        assert forwarder.counters["outbox.reopened"] == 1
    finally:
        box.close()


async def test_an_attempt_that_fails_unexpectedly_does_not_end_the_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "var"
    box = Outbox(_block(directory))
    forwarder = Forwarder(_DownLink(), box, SYSTEM_CLOCK)  # type: ignore[arg-type]
    reopen = box.reopen
    calls = 0

    def broken_once() -> dict[int, int] | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return reopen()

    monkeypatch.setattr(box, "reopen", broken_once)
    monkeypatch.setattr(forwarder_module, "REOPEN_FIRST_S", 0.0)
    _unblock(directory)
    try:
        with capture_logs() as logged:
            await asyncio.wait_for(forwarder._reopen_loop(), 5)
        assert box.durable
        assert calls == 2
        assert forwarder.counters["outbox.reopen_failures"] == 1
        assert [e["error"] for e in logged if e["log_level"] == "error"] == [
            "RuntimeError('a bug')"
        ]
    finally:
        box.close()


def test_the_back_off_doubles_and_is_bounded() -> None:
    pauses = list(itertools.islice(reopen_pauses(), 6))
    assert pauses[0] == forwarder_module.REOPEN_FIRST_S
    assert pauses == sorted(pauses)
    assert max(pauses) == forwarder_module.REOPEN_MAX_S
    assert pauses[-2:] == [forwarder_module.REOPEN_MAX_S] * 2


# --- health --------------------------------------------------------------------------------

FINE = GatewayState(log_error=None, link_up=True, outbox_depth=0, loop_lag_s=0.001)


def test_an_outbox_in_memory_is_degraded_naming_the_file_and_the_error() -> None:
    error = "outbox /var/lib/trigger-mesh/activations.db.outbox: disk I/O error"
    health = gateway_health(dataclasses.replace(FINE, outbox_fallback_error=error))
    assert (health.status, health.http_status) == (Status.DEGRADED, 200)
    assert health.reasons == (f"outbox held in memory, not durable: {error}",)
    assert health.as_json()["checks"]["outbox_fallback_error"] == error  # type: ignore[index]


def test_an_outbox_in_its_file_is_not_a_reason() -> None:
    assert gateway_health(FINE).status is Status.OK
