"""Fault injection: the gateway starts on a disk with no free byte, where its outbox file
cannot be opened; then space comes back.

Recording matters more than the record: the gateway must come up, command the cameras,
get their acks and tell dispatch (receipts and final records, through an outbox held in
memory), say on /health that its outbox is not durable, naming the file and the error,
and once space is freed put the outbox back in its file by itself.

The log and the outbox share a tmpfs of their own (the ``small_disk`` fixture: root, as
CI has). A log closed in order on a disk filled to the last byte cannot be opened either:
SQLite must create its shared-memory file (32 KiB) and has no block for it, and the
gateway exits for the log, which this test does not change (test_chaos_disk_full.py
covers the log on a full disk). So the log is held open across the restart by a reader
(as any other reader may hold it: an operator's sqlite3 shell, a backup being taken):
its WAL (pre-sized to 8 MiB) and shared-memory file stay, and the restarted gateway
opens it and writes records into that WAL although no block is free. The outbox, closed
in order with nobody holding it, lost its WAL and shared-memory files, and SQLite cannot
create them again: "disk I/O error", the error that ended the gateway before.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.decide.admission import activation_id_for
from mesh.protocol.models import TriggerEvent
from tests.chaos_tools import (
    FAR,
    IN_RANGE,
    CameraFleet,
    GatewayRunner,
    Observer,
    TriggerSender,
    assert_chain_intact,
    audit_verify,
    fill,
    public_key_of,
    running,
    wait_for,
    wait_settled,
    write_gateway_config,
)
from tests.http_helpers import get, parse_metrics, sample


def _lines(output: str, event: str) -> list[dict[str, object]]:
    """The gateway's JSON log lines whose event starts with ``event``."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if str(entry.get("event", "")).startswith(event):
                found.append(entry)
    return found


def _outbox_sequence(outbox: Path) -> int:
    """How many entries the outbox file has ever taken (SQLite's AUTOINCREMENT counter)."""
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    finally:
        db.close()
    return 0 if row is None else int(row[0])


async def _health(port: int) -> dict[str, object]:
    return (await get(port, "/health")).json()


async def _outbox_durable_gauge(port: int) -> float:
    metrics = parse_metrics((await get(port, "/metrics")).body.decode())
    return sample(metrics, "trigger_mesh_outbox_durable")


async def _wait_outbox_durable(port: int, timeout_s: float) -> None:
    """Ask /health (every 100 ms) until it no longer says the outbox is held in memory."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        answer = await _health(port)
        checks = answer["checks"]
        assert isinstance(checks, dict)
        if checks["outbox_fallback_error"] is None:
            return
        if loop.time() > deadline:
            raise AssertionError(f"outbox not back in its file within {timeout_s:g} s: {answer}")
        await asyncio.sleep(0.1)


async def test_a_gateway_whose_outbox_cannot_be_opened_still_commands_cameras(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, small_disk: Path
) -> None:
    gateway_id = f"gw-chaos-{uuid.uuid4().hex[:6]}"
    log = small_disk / "activations.db"
    outbox = small_disk / "activations.db.outbox"  # beside the log, as the daemon puts it
    port = free_port()
    config = write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=mosquitto.url,
        topics=topics,
        gateway_id=gateway_id,
        log_path=log,
        metrics_port=port,
    )
    runner = GatewayRunner(config, tmp_path)  # its output stays off the full disk
    observer = Observer(mosquitto.url, topics, gateway_id)
    sender = TriggerSender(mosquitto.url, topics)
    fleet = CameraFleet([*IN_RANGE, FAR], mosquitto.url, topics)
    required = [s.camera_id for s in IN_RANGE]
    holder: sqlite3.Connection | None = None

    async def burst(tag: str) -> list[TriggerEvent]:
        events = [sender.event(tag) for _ in range(3)]
        for event in events:
            await sender.publish(event)
            await asyncio.sleep(0.05)
        return events

    try:
        async with running(observer.link, sender.link, handler=observer.on_message):
            await fleet.start()
            runner.start()
            await observer.wait_gateway_up(runner)
            before = await burst("before")
            report = await wait_settled(before, log, fleet, required, 20)
            assert report.lost == []
            queued_before = _outbox_sequence(outbox)
            assert queued_before >= 6  # receipts and final records went through the file

            holder = sqlite3.connect(log)
            holder.execute("SELECT count(*) FROM records").fetchone()
            assert runner.terminate() == 0
            assert Path(f"{log}-shm").exists()  # held: the log's files stay
            assert not Path(f"{outbox}-shm").exists()  # closed in order: gone
            filler = fill(small_disk)
            assert os.statvfs(small_disk).f_bavail == 0

            runner.start()
            # On the old code the gateway exits here: OutboxError, "disk I/O error".
            await observer.wait_gateway_up(runner)
            during = await burst("during")
            aids = [activation_id_for(e.event_id) for e in during]
            await wait_for(
                lambda: all(fleet.started(c, a) for c in required for a in aids),
                15,
                "the cameras commanded while the outbox cannot be opened",
            )
            full_report = await wait_settled(during, log, fleet, required, 20)
            # Dispatch heard of them: receipts and final records, through memory.
            await wait_for(
                lambda: (
                    all(e.event_id in observer.receipts for e in during)
                    and all(a in observer.records for a in aids)
                ),
                15,
                "receipts and final records sent from the outbox held in memory",
            )
            during_health = await _health(port)
            during_gauge = await _outbox_durable_gauge(port)
            output = runner.output()
            fallbacks = _lines(output, "outbox file cannot be opened")
            assert os.statvfs(small_disk).f_bavail == 0  # full all along
            assert runner.running, output[-3000:]

            filler.unlink()
            # Space again: the forwarder's next attempt (at most REOPEN_MAX_S away) opens
            # the file; /health says so.
            await _wait_outbox_durable(port, 20)
            after = await burst("after")
            final_report = await wait_settled([*before, *during, *after], log, fleet, required, 30)
            await wait_for(
                lambda: all(e.event_id in observer.receipts for e in after),
                15,
                "receipts after the outbox is back in its file",
            )
            reopened = _lines(runner.output(), "outbox file open again")
            after_gauge = await _outbox_durable_gauge(port)
    finally:
        runner.close()
        await fleet.stop()
        if holder is not None:
            holder.close()
    code, verdict = await audit_verify(log, public_key_of(config))
    queued_after = _outbox_sequence(outbox)
    print(
        f"outbox disk full: while full {full_report.summary()}; health {during_health}; "
        f"at the end {final_report.summary()}; outbox file took {queued_before} then "
        f"{queued_after} entries"
    )
    # While full: every camera started, every activation logged (in the held log's WAL),
    # dispatch told; the gateway degraded, not exited, and said why, naming the file.
    assert full_report.lost == []
    assert full_report.started == 3
    assert full_report.unlogged == 0
    assert during_health["status"] == "degraded", during_health
    reasons = during_health["reasons"]
    assert isinstance(reasons, list)
    [reason] = [r for r in reasons if str(r).startswith("outbox held in memory")]
    assert str(outbox) in reason, reason
    assert len(fallbacks) == 1, fallbacks
    assert fallbacks[0]["path"] == str(outbox)
    assert fallbacks[0]["level"] == "error"
    assert during_gauge == 0
    # Freed: back in its file by itself, and what came next went through it.
    assert len(reopened) == 1, reopened
    assert reopened[0]["path"] == str(outbox)
    assert after_gauge == 1
    assert queued_after >= queued_before + 6  # the last burst's receipts and records
    assert final_report.lost == []
    assert final_report.started == 9
    assert_chain_intact(code, verdict)
