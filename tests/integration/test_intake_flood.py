"""Floods against a real gateway on a real mosquitto (issue 15, items 4, 5 and 13): a
presence flood from one camera's topic, an ack flood from one camera's, and a broker
holding 100,000 retained presences when the gateway starts."""

from __future__ import annotations

import asyncio
import json
import math
import resource
import time
import uuid
from pathlib import Path

import pytest

from bridge.mqtt.client import LinkDown, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.audit.replay import Replayer
from mesh.decide.geo import offset
from mesh.decide.policy import Policy
from mesh.journal.records import AcksDroppedEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraPresence,
    CameraRole,
    Position,
    ReceiptOutcome,
    TriggerKind,
)
from tests.flood_tools import blast, write_stream
from tests.harness import CENTER, Mesh, event, make_gateway, running_mesh, wait_until

# Every weapon draw its own activation: each trigger takes the whole path, log to command.
EAGER = Policy.model_validate({"kinds": {"weapon_draw": {"cooldown_s": 0}}})
FLOODER = "bwc-stolen"
SAMPLES = 100  # triggers per measurement: the p99 is then the second largest


def _presence(camera_id: str, north_m: float, *, recording: bool = False, pad: int = 0) -> bytes:
    lat, lon = offset(CENTER.lat, CENTER.lon, north_m, 0)
    now = time.time_ns()
    body = CameraPresence(
        camera_id=camera_id,
        unit_id="car-99",
        role=CameraRole.BODY,
        online=True,
        recording=recording,
        position=Position(lat=lat, lon=lon, fix_at_ns=now),
        last_seen_ns=now,
    ).model_dump(mode="json")
    if pad:
        body["padding"] = "x" * pad  # unknown fields are ignored: only the size refuses it
    return json.dumps(body).encode()


async def _receipt_latencies_ms(mesh: Mesh, count: int) -> list[float]:
    """Send ``count`` weapon draws one after another; each one's send → receipt time."""
    latencies = []
    for _ in range(count):
        trigger = event(TriggerKind.WEAPON_DRAW, source_id=f"holster-{uuid.uuid4().hex[:6]}")
        started = time.perf_counter()
        await mesh.send(trigger)
        receipt = await mesh.receipt(trigger, timeout_s=30)
        latencies.append((time.perf_counter() - started) * 1000)
        assert receipt.outcome is ReceiptOutcome.ACCEPTED, receipt
    return latencies


def _p99(values: list[float]) -> float:
    """Nearest rank: of 100 samples, the second largest."""
    ordered = sorted(values)
    return ordered[math.ceil(len(ordered) * 0.99) - 1]


def _shed(counters: dict[str, int]) -> int:
    """Presence messages the gateway held back or dropped."""
    return sum(
        counters.get(f"presence.{what}", 0) for what in ("held", "dropped_rate", "dropped_queue")
    )


def _presence_rows(log: Path, camera_id: str) -> int:
    return sum(
        1
        for r in read_records(log)
        if r.kind == RecordKind.PRESENCE and f'"camera_id":"{camera_id}"' in r.body.replace(" ", "")
    )


async def test_a_presence_flood_neither_delays_triggers_nor_fills_the_log(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """One camera's certificate floods its own presence topic (QoS 1, 40,000 messages a
    round, one in fifty padded to 60 KB, its recording flag flipping every message so each
    one is a change) while genuine triggers are sent: each trigger's receipt comes within
    2x the unloaded p99 plus 200 ms of absolute slack (the flood's sender and the broker
    share the machine's 2 cores with the gateway, and every trigger crosses the flooded
    broker six times: with the flood on a topic nobody reads, the p99 alone went from
    25-80 ms to 65-250 ms), the log gains
    a bounded number of presence rows, and the gateway keeps one entry for the camera."""
    log = tmp_path / "log.db"
    stream = tmp_path / "flood.bin"
    topic = topics.presence(FLOODER)
    sent_per_round = write_stream(
        stream,
        (
            (
                topic,
                _presence(FLOODER, 2000, recording=i % 2 == 0, pad=60_000 if i % 50 == 0 else 0),
            )
            for i in range(40_000)
        ),
        qos=1,
    )
    async with running_mesh(mosquitto.url, topics, log, policy=EAGER) as mesh:
        gateway = mesh.gateway
        await _receipt_latencies_ms(mesh, 5)  # warm-up: the first activations cost more
        unloaded = await _receipt_latencies_ms(mesh, SAMPLES)
        rows_before = _presence_rows(log, FLOODER)
        size_before = log.stat().st_size
        flood = blast(
            "127.0.0.1", mosquitto.port, f"flood-{uuid.uuid4().hex[:6]}", stream, repeat=0
        )
        flood_started = time.monotonic()
        try:
            # The flood is under way at the gateway before the first trigger goes.
            await wait_until(lambda: gateway.presence.get(FLOODER) is not None, 30)
            loaded = await _receipt_latencies_ms(mesh, SAMPLES)
        finally:
            flood.stop()
        flood_s = time.monotonic() - flood_started
        # Unloaded again, after: the machine's own load drifts (2 cores, shared); the
        # baseline is the worse of the two.
        after = await _receipt_latencies_ms(mesh, SAMPLES)
        baseline = max(_p99(unloaded), _p99(after))
        await gateway.log.flush()
        counters = gateway.all_counters()
        print(f"\nflood {flood_s:.1f} s: {counters}")
        print(
            f"receipt p99: unloaded {_p99(unloaded):.1f} ms before, {_p99(after):.1f} ms "
            f"after; under flood {_p99(loaded):.1f} ms"
        )
        assert _p99(loaded) <= 2 * baseline + 200, (sorted(unloaded), sorted(loaded))
        # Logged only on change, at most PRESENCE_BURST + PRESENCE_RATE_PER_S per second.
        rows = _presence_rows(log, FLOODER) - rows_before
        assert rows <= 6 + 2 * flood_s + 2, (rows, flood_s, sent_per_round)
        assert log.stat().st_size - size_before < 2_000_000
        assert _shed(counters) > 1000, counters  # the flood reached the gateway, and was shed
        # Bounded state: one entry for the camera, one bucket, at most one message held.
        assert len(gateway.presence) == len(mesh.agents) + 1
        assert len(gateway.presence_rate) <= len(mesh.agents) + 1
        assert len(gateway._held_presence) <= 1
    # What the decisions read is in the log as they saw it: replay agrees.
    result = Replayer().run(read_records(log))
    assert result.activations == 5 + 3 * SAMPLES
    assert result.same, [str(d) for d in result.differences]


async def test_an_ack_flood_is_limited_per_camera_and_summarised(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """One camera's certificate sends 120,000 copies of an ack in a few seconds: they
    become at most a few log rows and one summary record per camera per window, while a
    genuine activation sent during the flood still gets every camera's first ack logged."""
    log = tmp_path / "log.db"
    async with running_mesh(mosquitto.url, topics, log, policy=EAGER) as mesh:
        gateway = mesh.gateway
        first = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="holster-a"))
        ack = CameraAck(
            activation_id=first.activation_id,
            camera_id="bwc-12a",
            status=AckStatus.ALREADY_RECORDING,
            reason="flood",
            received_at_ns=time.time_ns(),
        )
        stream = tmp_path / "acks.bin"
        topic = topics.ack(gateway.settings.issuer, "bwc-12a")
        write_stream(
            stream, ((topic, ack.model_dump_json().encode()) for _ in range(120_000)), qos=1
        )
        rows_before = sum(1 for r in read_records(log) if r.kind == RecordKind.ACK)
        flood = blast("127.0.0.1", mosquitto.port, f"ackflood-{uuid.uuid4().hex[:6]}", stream)
        try:
            # A genuine activation while the flood runs: every camera's first ack counts.
            await wait_until(lambda: gateway.all_counters().get("acks.dropped_rate", 0) > 100, 30)
            record = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="holster-b"))
            await asyncio.to_thread(flood.wait, 120)
        finally:
            flood.stop()
        assert {c.camera_id for c in record.cameras if c.status == "started"} | {
            c.camera_id for c in record.cameras if c.status == "already_recording"
        } >= {"dash-12", "bwc-12a", "bwc-7a"}
        await wait_until(lambda: gateway.all_counters().get("acks.late", 0) > 0)
    # Counted once the gateway has stopped: the flood's last packets may still be read
    # until its links close, and the final summary is written after that.
    dropped = gateway.counters["acks.dropped_rate"] + gateway.counters["acks.repeated"]
    records = list(read_records(log))  # the gateway has stopped: summaries are written
    ack_rows = sum(1 for r in records if r.kind == RecordKind.ACK) - rows_before
    summaries = [
        AcksDroppedEntry.model_validate_json(r.body)
        for r in records
        if r.kind == RecordKind.ACKS_DROPPED
    ]
    assert ack_rows <= 10, ack_rows  # was one row per ack: 120,000
    assert summaries
    assert {s.camera_id for s in summaries} == {"bwc-12a"}
    # What reached the gateway and was dropped is all in the summaries; the rest the broker
    # dropped from the ack session's queue (its per-client limit, 10,000), away from
    # triggers. How many reach the gateway depends on how far the blast outruns its reads
    # (9,588 in a CI run on a fast day, over 10,000 before): a flood of thousands either way.
    assert sum(s.dropped for s in summaries) == dropped > 1_000
    second = [r for r in records if r.kind == RecordKind.ACK and record.activation_id in r.body]
    assert {json.loads(r.body)["ack"]["camera_id"] for r in second} >= {
        "dash-12",
        "bwc-12a",
        "bwc-7a",
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("planted", [100_000])
async def test_the_gateway_starts_with_100000_retained_presences(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, planted: int
) -> None:
    """100,000 retained presences planted by one client (in a few seconds): the gateway
    becomes ready, does not exit, keeps at most its cap of cameras, logs none of them,
    and a trigger works."""
    stream = tmp_path / "retained.bin"
    write_stream(
        stream,
        (
            (topics.presence(f"fake-{i}"), _presence(f"fake-{i}", 3000 + i % 500))
            for i in range(planted)
        ),
        retain=True,
        qos=1,
    )
    plant = blast("127.0.0.1", own_mosquitto.port, "planter", stream)
    await asyncio.to_thread(plant.wait, 300)
    log = tmp_path / "log.db"
    gateway = make_gateway(own_mosquitto.url, topics, log, policy=EAGER, client_id="gw-start")
    rss_before = _rss_mb()
    started = time.monotonic()
    async with running_mesh(own_mosquitto.url, topics, log, gateway=gateway) as mesh:
        ready_s = time.monotonic() - started
        # The genuine cameras, which came online after the planted backlog, are known.
        await wait_until(lambda: {"dash-12", "bwc-12a"} <= set(gateway.presence.ids()), 120)
        known_s = time.monotonic() - started
        assert len(gateway.presence) <= gateway.settings.max_cameras
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="holster-1"))
        assert {c.camera_id for c in record.cameras if c.expected} >= {"dash-12", "bwc-12a"}
        assert all(not t.done() for t in mesh.tasks), "a task of the mesh ended"
        assert gateway.link.on_connect_failures == 0
        counters = gateway.all_counters()
    rows = sum(1 for r in read_records(log) if r.kind == RecordKind.PRESENCE)
    assert rows <= 10, rows  # none of the planted ones: no decision read them
    print(
        f"\n{planted} retained presences: ready in {ready_s:.2f} s, the genuine cameras "
        f"known in {known_s:.2f} s; {len(gateway.presence)} kept, "
        f"{counters.get('presence.evicted', 0)} evicted, "
        f"{counters.get('presence.dropped_queue', 0)} dropped from the queue; "
        f"test process max RSS {rss_before:.0f} -> {_rss_mb():.0f} MB"
    )


async def test_a_link_failure_in_the_on_connect_hook_reconnects(
    mosquitto: MosquittoProcess,
) -> None:
    """The hook's publish times out (LinkDown): the link counts it, reconnects and runs
    the hook again; it never ends ``run()``."""
    calls = 0
    connected_twice = asyncio.Event()

    async def hook() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LinkDown("publish timed out (as with 15,000 retained presences ahead of it)")
        connected_twice.set()

    link = MqttLink(
        mosquitto.url, LinkOptions(f"t-hook-{uuid.uuid4().hex[:6]}", persistent_session=False)
    )
    task = asyncio.create_task(link.run(lambda _m: None, hook))
    try:
        await asyncio.wait_for(connected_twice.wait(), 15)
        assert not task.done()
        assert (link.on_connect_failures, link.connects, calls) == (1, 2, 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
