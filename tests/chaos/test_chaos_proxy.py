"""Fault injection: a TCP proxy between the gateway and the broker that delays, drops and
cuts. The gateway (the real daemon, a child process) reaches the broker only through
the proxy; cameras, the sender and the observer connect directly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.admission import activation_id_for
from mesh.journal.records import RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import TriggerEvent
from tests.chaos_tools import (
    DOWN,
    FAR,
    IN_RANGE,
    UP,
    CameraFleet,
    ChaosProxy,
    GatewayRunner,
    LossReport,
    Observer,
    TriggerSender,
    assert_chain_intact,
    audit_verify,
    public_key_of,
    running,
    wait_for,
    wait_settled,
    write_gateway_config,
)

REQUIRED = [s.camera_id for s in IN_RANGE]
LANES = 3  # the gateway's MQTT connections (mesh/gateway/daemon.py)


@dataclass
class Rig:
    proxy: ChaosProxy
    runner: GatewayRunner
    observer: Observer
    sender: TriggerSender
    fleet: CameraFleet
    log: Path

    async def settle(self, events: list[TriggerEvent], timeout_s: float = 40) -> LossReport:
        report = await wait_settled(events, self.log, self.fleet, REQUIRED, timeout_s)
        print(f"  {report.summary()}; proxy {dict(self.proxy.counters)}")
        return report


@asynccontextmanager
async def rig(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, policy: dict[str, Any] | None
) -> AsyncIterator[Rig]:
    gateway_id = f"gw-chaos-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "activations.db"
    proxy = ChaosProxy(("127.0.0.1", mosquitto.url.port), seed=7)
    await proxy.start()
    config = write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=proxy.url,
        topics=topics,
        gateway_id=gateway_id,
        log_path=log,
        policy=policy,
    )
    runner = GatewayRunner(config, tmp_path)
    observer = Observer(mosquitto.url, topics, gateway_id)
    sender = TriggerSender(mosquitto.url, topics)
    fleet = CameraFleet([*IN_RANGE, FAR], mosquitto.url, topics)
    try:
        async with running(observer.link, sender.link, handler=observer.on_message):
            await fleet.start()
            runner.start()
            await observer.wait_gateway_up(runner)
            yield Rig(proxy, runner, observer, sender, fleet, log)
            assert runner.running, runner.output()[-3000:]
    finally:
        runner.close()
        await fleet.stop()
        await proxy.close()
    code, verdict = await audit_verify(log, public_key_of(config))
    assert_chain_intact(code, verdict)


async def _burst(rig: Rig, tag: str, count: int, spacing_s: float = 0.05) -> list[TriggerEvent]:
    events = [rig.sender.event(tag) for _ in range(count)]
    for event in events:
        await rig.sender.publish(event)
        await asyncio.sleep(spacing_s)
    return events


def _assert_nothing_lost(report: LossReport, rig: Rig, count: int) -> None:
    tail = rig.runner.output()[-3000:]
    assert report.sent == count
    assert report.lost == [], "\n".join(report.lost) + "\n" + tail
    assert report.started_late == []
    assert report.missed_escalated == []
    assert report.started == count


async def test_delayed_dropped_and_cut_connections_lose_no_activation(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    began = time.monotonic()
    async with rig(mosquitto, topics, tmp_path, None) as r:
        proxy = r.proxy
        accepted = proxy.counters["accepted"]
        # The gateway's three lanes (triggers, acks, presence), each its own connection.
        assert accepted == LANES
        assert proxy.open_connections == LANES

        # 1. Every chunk in both directions held 20-100 ms, in order.
        before = {d: proxy.counters[f"chunks.{d}"] for d in (UP, DOWN)}
        proxy.delay(0.02, 0.08)
        events = await _burst(r, "delay", 8)
        print("delay 20-100 ms per chunk:")
        report = await r.settle(events)
        _assert_nothing_lost(report, r, 8)
        # Every byte went through the delay: the gateway's publishes, its triggers and acks.
        for d in (UP, DOWN):
            assert (
                proxy.counters[f"delayed_chunks.{d}"] == proxy.counters[f"chunks.{d}"] - before[d]
            )
            assert proxy.counters[f"delayed_chunks.{d}"] > 0
        proxy.pass_through()

        # 2. Cut: the gateway's connection reset, and nothing listening for 2 s while
        # triggers arrive (the broker keeps them for the gateway's persistent session).
        assert proxy.cut("refuse") == LANES
        events = await _burst(r, "cut", 4)
        await asyncio.sleep(max(0.0, 2.0 - 4 * 0.05))
        assert not proxy.listening
        assert proxy.counters["accepted"] == accepted  # nobody got through meanwhile
        await proxy.restore()
        print("cut, nothing listening for 2 s:")
        report = await r.settle(events)
        _assert_nothing_lost(report, r, 4)
        assert proxy.counters["accepted"] > accepted  # it did reconnect
        accepted = proxy.counters["accepted"]

        # 2b. Cut, and for 1 s every new connection accepted and reset at once (a load
        # balancer whose back end is gone). A reset during the MQTT handshake is only
        # noticed at the connect timeout (10 s: docs/reliability.md), still in expiry.
        await wait_for(lambda: proxy.open_connections == LANES, 20, "all the links back")
        assert proxy.cut("reset") == LANES
        events = await _burst(r, "reset", 2)
        await wait_for(lambda: proxy.counters["reset"] >= 1, 5, "the gateway trying again")
        await asyncio.sleep(1.0)
        await proxy.restore()
        restored = time.monotonic()
        await wait_for(
            lambda: proxy.counters["accepted"] > accepted, 20, "the gateway reconnecting"
        )
        print(f"cut, connections reset for 1 s (back {time.monotonic() - restored:.1f} s later):")
        report = await r.settle(events)
        _assert_nothing_lost(report, r, 2)
        accepted = proxy.counters["accepted"]

        # 3. Black hole both ways for 2 s (triggers to the gateway vanish on the way, so
        # do its PUBACKs), ended as a NAT or a keepalive ends one: the flow is reset.
        proxy.drop()
        dropped = proxy.counters["dropped_bytes.down"]
        events = await _burst(r, "hole", 4)
        await wait_for(
            lambda: proxy.counters["dropped_bytes.down"] > dropped, 5, "triggers into the hole"
        )
        await asyncio.sleep(2.0)
        proxy.cut("accept")
        await proxy.restore()
        print("black hole for 2 s, then reset:")
        report = await r.settle(events)
        _assert_nothing_lost(report, r, 4)
        assert proxy.counters["accepted"] > accepted
    print(f"proxy chaos: {time.monotonic() - began:.1f} s, proxy {dict(proxy.counters)}")


async def test_command_that_expires_in_a_black_hole_is_missed_and_escalated_never_late(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The gateway hears the trigger, but nothing it sends gets out until the command has
    expired: the activation must end `missed` and escalated, and no camera may start it
    when the link comes back (a recording started late is not what was ordered)."""
    policy = {"defaults": {"command_ttl_s": 3, "ack_deadline_ms": 500}}
    async with rig(mosquitto, topics, tmp_path, policy) as r:
        proxy = r.proxy
        proxy.drop(UP)  # the gateway receives, but its commands (and PUBACKs) vanish
        [event] = await _burst(r, "expire", 1)
        aid = activation_id_for(event.event_id)

        def logged(kind: RecordKind) -> bool:
            return any(True for _ in read_records(r.log, activation_id=aid, kinds=(kind,)))

        await wait_for(lambda: logged(RecordKind.ACTIVATION), 10, "the activation logged")
        # Logged first, sent after: the command's bytes are swallowed a moment later.
        await wait_for(lambda: proxy.counters["dropped_bytes.up"] > 0, 10, "the command swallowed")
        await wait_for(lambda: logged(RecordKind.FINISHED), 15, "the expired activation closed")
        # Link back: whatever the gateway (or its MQTT client) still holds goes out now.
        proxy.cut("accept")
        await proxy.restore()
        report = await r.settle([event], timeout_s=5)
        [opened] = read_records(r.log, activation_id=aid, kinds=(RecordKind.ACTIVATION,))
        [closed] = read_records(r.log, activation_id=aid, kinds=(RecordKind.FINISHED,))
        open_s = (closed.at_ns - opened.at_ns) / 1e9
        print(f"  closed {open_s:.1f} s after it opened (TTL 3 s)")
        # Decided at the command's expiry, not at the MQTT client's 10 s PUBACK timeout.
        assert open_s < 3 + 1.5
        await asyncio.sleep(1.0)  # time for a late command to reach the cameras, if sent
        report = await r.settle([event], timeout_s=1)
        assert not any(r.fleet.started(c, aid) for c in REQUIRED)
        assert report.started_late == []
        assert report.lost == [], "\n".join(report.lost) + r.runner.output()[-3000:]
        assert len(report.missed_escalated) == 1
