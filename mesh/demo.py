"""``trigger-mesh demo``: the whole path on one machine, with a scripted scenario.

An embedded broker (or ``--broker``), a gateway for unit car-12, 20 simulated cameras
around it (four of them kilometres away), and a script: light bar on, a weapon draw
whose sensor repeats itself five times, a TASER armed by an officer who has run 300 m
north, and a command delivered twice. Everything travels over MQTT exactly as in
production; the summary is read from the activation records dispatch receives and
from the gateway's own log of targeting decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bridge.client import LinkOptions, MqttLink, ProtocolChoice
from bridge.codec import encode
from bridge.embedded import EmbeddedBroker
from bridge.topics import Topics
from bridge.urls import BrokerUrl
from mesh.activation_log import read_records
from mesh.camera_agent import CameraAgent
from mesh.fleet import CameraSpec, build_agents, wait_all_up
from mesh.gateway import Gateway, GatewaySettings
from mesh.geo import offset
from mesh.log_records import ActivationEntry, RecordKind
from mesh.models import (
    CONFIRMED_OUTCOMES,
    AckStatus,
    ActivationState,
    CameraRole,
    GeoPoint,
    OutcomeStatus,
    Position,
    ReceiptOutcome,
    TriggerEvent,
    TriggerKind,
)
from mesh.policy import Policy
from mesh.render import activation_table
from mesh.runtime import settle_heap, tune_gc
from mesh.stats import percentile
from mesh.watch import ActivationWatcher
from triggers.manual import manual_trigger

UNIT = "car-12"
# Philadelphia City Hall; any point works, this one is easy to check on a map.
CENTER = GeoPoint(lat=39.952583, lon=-75.165222)
TASER_OFFSET_M = (300.0, 0.0)

# (camera, unit, role, metres north of the car, metres east)
LAYOUT: tuple[tuple[str, str, CameraRole, float, float], ...] = (
    ("dash-12", "car-12", CameraRole.DASH, 0, 0),
    ("bwc-12a", "car-12", CameraRole.BODY, 12, 5),
    ("bwc-12b", "car-12", CameraRole.BODY, 25, -10),
    ("dash-7", "car-7", CameraRole.DASH, 80, 90),
    ("bwc-7a", "car-7", CameraRole.BODY, 95, 110),
    ("bwc-7b", "car-7", CameraRole.BODY, 60, 130),
    ("dash-9", "car-9", CameraRole.DASH, -180, 150),
    ("bwc-9a", "car-9", CameraRole.BODY, -200, 170),
    ("bwc-9b", "car-9", CameraRole.BODY, -150, 120),
    ("bwc-15a", "foot-15", CameraRole.BODY, -40, -60),
    ("bwc-15b", "foot-15", CameraRole.BODY, -260, -90),
    ("dash-22", "car-22", CameraRole.DASH, 150, -200),
    ("bwc-22a", "car-22", CameraRole.BODY, 210, -60),
    ("dash-4", "car-4", CameraRole.DASH, 360, 20),
    ("bwc-4a", "car-4", CameraRole.BODY, 390, -30),
    ("bwc-4b", "car-4", CameraRole.BODY, 340, 60),
    ("dash-31", "car-31", CameraRole.DASH, 1200, 400),
    ("bwc-31a", "car-31", CameraRole.BODY, 1230, 420),
    ("dash-40", "car-40", CameraRole.DASH, -2500, 300),
    ("bwc-40a", "car-40", CameraRole.BODY, -2480, 320),
)
# Further than any radius in the scenario from every trigger origin: must never record.
FAR_CAMERAS = ("dash-31", "bwc-31a", "dash-40", "bwc-40a")


def demo_specs() -> list[CameraSpec]:
    specs = []
    for camera_id, unit, role, north, east in LAYOUT:
        lat, lon = offset(CENTER.lat, CENTER.lon, north, east)
        specs.append(CameraSpec(camera_id, unit, role, GeoPoint(lat=lat, lon=lon)))
    return specs


@dataclass
class DemoRun:
    """What happened, gathered while the scenario runs."""

    events: list[tuple[str, TriggerEvent]] = field(default_factory=list)
    activation_ids: list[str] = field(default_factory=list)
    burst_sent: int = 0
    burst_suppressed: int = 0
    duplicate_acks: list[str] = field(default_factory=list)
    recordings_before_duplicate: int = 0
    recordings_after_duplicate: int = 0
    problems: list[str] = field(default_factory=list)


def _event(kind: TriggerKind, source_id: str, position: Position | None = None) -> TriggerEvent:
    return manual_trigger(kind, UNIT, source_id=source_id, position=position)


@contextlib.asynccontextmanager
async def _broker(broker: str | None) -> AsyncIterator[tuple[BrokerUrl, ProtocolChoice, str]]:
    if broker is None:
        async with EmbeddedBroker() as embedded:
            protocol: ProtocolChoice = "3.1.1" if embedded.kind == "amqtt" else "auto"
            yield embedded.url, protocol, f"embedded {embedded.kind}"
    else:
        yield BrokerUrl.parse(broker), "auto", "external"


async def run_demo(
    *,
    broker: str | None = None,
    log_path: Path | None = None,
    console: Console | None = None,
    live: bool = True,
) -> dict[str, Any]:
    """Run the scenario; return the summary (``ok`` says whether it held)."""
    console = console or Console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    # A private prefix and client ids, so a demo on a shared broker touches nothing else.
    topics = Topics(f"mesh/v1/demo-{run_id}") if broker else Topics()
    with tempfile.TemporaryDirectory(prefix="trigger-mesh-demo-") as tmp:
        log = log_path or Path(tmp) / "activations.db"
        async with _broker(broker) as (url, protocol, broker_kind):
            console.print(f"[bold]trigger-mesh demo[/] broker: {broker_kind} at {url}; log: {log}")
            return await _scenario(
                shared_broker=broker is not None,
                url=url,
                protocol=protocol,
                topics=topics,
                log=log,
                run_id=run_id,
                console=console,
                live=live,
            )


async def _scenario(
    *,
    shared_broker: bool,
    url: BrokerUrl,
    protocol: ProtocolChoice,
    topics: Topics,
    log: Path,
    run_id: str,
    console: Console,
    live: bool,
) -> dict[str, Any]:
    tune_gc()
    now = time.time_ns()
    agents = build_agents(
        demo_specs(),
        url=url,
        topics=topics,
        protocol=protocol,
        client_prefix=f"demo-{run_id}-",
        now_ns=now,
    )
    gateway = Gateway(
        GatewaySettings(
            unit_id=UNIT, log_path=log, topics=topics, position=CENTER, policy=Policy()
        ),
        url=url,
        protocol=protocol,
        client_id=f"demo-{run_id}-gw",
    )
    watcher = ActivationWatcher(url, topics, client_id=f"demo-{run_id}-watch", protocol=protocol)
    driver = MqttLink(
        url, LinkOptions(f"demo-{run_id}-driver", persistent_session=False, protocol=protocol)
    )
    tasks = [asyncio.create_task(a.run()) for a in agents]
    tasks += [
        asyncio.create_task(gateway.run()),
        asyncio.create_task(watcher.run()),
        asyncio.create_task(driver.run(lambda _m: None)),
    ]
    run = DemoRun()
    try:
        await asyncio.wait_for(gateway.ready.wait(), 15)
        await wait_all_up(agents, 15)
        await watcher.link.wait_up(15)
        await driver.wait_up(15)
        # Retained presence of all 20 cameras reaches the gateway on its subscription.
        if not await _until(lambda: len(gateway.presence) >= len(agents), 10):
            run.problems.append(f"gateway saw {len(gateway.presence)} of {len(agents)} cameras")
        settle_heap()
        screen = (
            Live(_view(watcher, agents), console=console, refresh_per_second=8, transient=False)
            if live
            else None
        )
        with screen or contextlib.nullcontext():
            refresher = asyncio.create_task(_refresh(screen, watcher, agents)) if screen else None
            try:
                await _script(
                    run=run, driver=driver, watcher=watcher, topics=topics, agents=agents, log=log
                )
            finally:
                if refresher is not None:
                    refresher.cancel()
            if screen is not None:
                screen.update(_view(watcher, agents))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if shared_broker:
            retained = [topics.presence(a.identity.camera_id) for a in agents]
            await _clear_retained(
                url, protocol, [*retained, topics.gateway(gateway.settings.issuer)]
            )
    return _summary(run, watcher, agents, log)


async def _clear_retained(url: BrokerUrl, protocol: ProtocolChoice, topics: list[str]) -> None:
    """A demo on a shared broker leaves nothing behind: its retained presence and status go."""
    link = MqttLink(
        url,
        LinkOptions(
            f"demo-clean-{uuid.uuid4().hex[:8]}", persistent_session=False, protocol=protocol
        ),
    )
    task = asyncio.create_task(link.run(lambda _m: None))
    try:
        await link.wait_up(5)
        for topic in topics:
            await link.publish(topic, b"", retain=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(check: Callable[[], bool], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _refresh(screen: Live, watcher: ActivationWatcher, agents: list[CameraAgent]) -> None:
    while True:
        await asyncio.sleep(0.125)
        screen.update(_view(watcher, agents))


def _view(watcher: ActivationWatcher, agents: list[CameraAgent]) -> Group:
    cams = Table(title="Cameras", title_justify="left")
    for name in ("camera", "unit", "role", "recording", "activations", "acks"):
        cams.add_column(name)
    now = time.time_ns()
    for agent in agents:
        recording = agent.recorder.is_recording(now)
        cams.add_row(
            agent.identity.camera_id,
            agent.identity.unit_id,
            agent.identity.role.value,
            "[green]● rec[/]" if recording else "[dim]idle[/]",
            str(len(agent.recorder.activations)),
            str(len(agent.acks_sent)),
        )
    return Group(activation_table(watcher.records.values()), cams)


async def _send(driver: MqttLink, topics: Topics, event: TriggerEvent) -> None:
    await driver.publish(topics.trigger(UNIT), encode(event), qos=1)


async def _script(
    *,
    run: DemoRun,
    driver: MqttLink,
    watcher: ActivationWatcher,
    topics: Topics,
    agents: list[CameraAgent],
    log: Path,
) -> None:
    async def step(label: str, event: TriggerEvent, *repeats: TriggerEvent) -> str | None:
        """Send a trigger (and its repeats, as a sensor burst would); wait for the outcome."""
        run.events.append((label, event))
        await _send(driver, topics, event)
        for repeat in repeats:
            await asyncio.sleep(0.04)
            await _send(driver, topics, repeat)
        receipt = await watcher.receipt(event.event_id, 10)
        if receipt is None or receipt.outcome is not ReceiptOutcome.ACCEPTED:
            run.problems.append(f"{label}: trigger not accepted ({receipt})")
            return None
        assert receipt.activation_id is not None
        run.activation_ids.append(receipt.activation_id)
        if await watcher.final_record(receipt.activation_id, 15) is None:
            run.problems.append(f"{label}: activation {receipt.activation_id} did not finish")
        return receipt.activation_id

    # 1. The light bar goes on.
    await step("light bar on", _event(TriggerKind.EMERGENCY_LIGHTS, "demo:lightbar"))
    await asyncio.sleep(0.8)

    # 2. A weapon is drawn; the holster sensor repeats itself: five triggers, one event.
    burst = [_event(TriggerKind.WEAPON_DRAW, "demo:holster-1001") for _ in range(5)]
    run.burst_sent = len(burst)
    draw_id = await step("weapon draw (sensor repeats 5x)", *burst)
    repeats = [e.event_id for e in burst[1:]]
    await watcher.wait_for(lambda: all(i in watcher.receipts for i in repeats), 5)
    run.burst_suppressed = sum(
        1
        for i in repeats
        if (r := watcher.receipts.get(i)) is not None and r.outcome is ReceiptOutcome.SUPPRESSED
    )
    await asyncio.sleep(0.8)

    # 3. The officer runs 300 m north and arms the TASER there.
    lat, lon = offset(CENTER.lat, CENTER.lon, *TASER_OFFSET_M)
    taser_at = Position(lat=lat, lon=lon, accuracy_m=8.0, fix_at_ns=time.time_ns())
    await step(
        "TASER armed 300 m north", _event(TriggerKind.TASER_ARM, "demo:taser-2001", taser_at)
    )
    await asyncio.sleep(0.5)

    # 4. The weapon-draw command arrives a second time (a QoS1 redelivery, a bridge).
    if draw_id is not None:
        command = _decisions(log)[draw_id].command
        run.recordings_before_duplicate = sum(a.recorder.recordings for a in agents)
        before = {a.identity.camera_id: len(a.acks_sent) for a in agents}
        await driver.publish(topics.command_all(), encode(command), qos=1)
        await asyncio.sleep(0.5)
        run.recordings_after_duplicate = sum(a.recorder.recordings for a in agents)
        for agent in agents:
            for ack in agent.acks_sent[before[agent.identity.camera_id] :]:
                if ack.activation_id == draw_id:
                    run.duplicate_acks.append(f"{ack.camera_id}:{ack.status.value}")


def _decisions(log: Path) -> dict[str, ActivationEntry]:
    return {
        row.activation_id or "": ActivationEntry.model_validate_json(row.body)
        for row in read_records(log, kinds=(RecordKind.ACTIVATION.value,))
    }


def _summary(
    run: DemoRun, watcher: ActivationWatcher, agents: list[CameraAgent], log: Path
) -> dict[str, Any]:
    problems = list(run.problems)
    decisions = _decisions(log)
    activations = []
    for activation_id in run.activation_ids:
        record = watcher.records.get(activation_id)
        entry = decisions.get(activation_id)
        if record is None or entry is None:
            problems.append(f"activation {activation_id}: no final record or log entry")
            continue
        targeted = sorted(t.camera_id for t in entry.targets if t.expected)
        started = sorted(c.camera_id for c in record.cameras if c.status in CONFIRMED_OUTCOMES)
        missed = sorted(
            c.camera_id
            for c in record.cameras
            if c.status in (OutcomeStatus.MISSED, OutcomeStatus.REJECTED)
        )
        out_of_range = sorted(
            {t.camera_id for t in entry.targets if not t.expected}
            | {c.camera_id for c in record.cameras if c.status is OutcomeStatus.OUT_OF_RANGE}
        )
        latencies = [
            c.latency_ms
            for c in record.cameras
            if c.latency_ms is not None and c.status in CONFIRMED_OUTCOMES
        ]
        if record.state is not ActivationState.CONFIRMED:
            problems.append(f"activation {activation_id} ({record.trigger.kind}) is {record.state}")
        if set(targeted) - set(started):
            problems.append(
                f"activation {activation_id}: not confirmed by "
                f"{sorted(set(targeted) - set(started))}"
            )
        wrongly = sorted(set(started) & set(FAR_CAMERAS))
        if wrongly:
            problems.append(f"activation {activation_id}: out-of-range cameras started {wrongly}")
        activations.append(
            {
                "activation_id": activation_id,
                "kind": record.trigger.kind.value,
                "source": record.trigger.source.type.value,
                "state": record.state.value,
                "targeted": targeted,
                "started": started,
                "newly_started": sorted(
                    c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED
                ),
                "missed": missed,
                "out_of_range": out_of_range,
                "merged_triggers": record.merged_triggers,
                "latency_ms": {
                    "p50": percentile(latencies, 50) if latencies else None,
                    "max": max(latencies) if latencies else None,
                },
                "all_acked_ms": record.all_acked_ms,
            }
        )
    far_recorded = sorted(
        a.identity.camera_id
        for a in agents
        if a.identity.camera_id in FAR_CAMERAS and a.recorder.recordings
    )
    if far_recorded:
        problems.append(f"cameras out of range recorded: {far_recorded}")
    if run.burst_suppressed != run.burst_sent - 1:
        problems.append(
            f"burst of {run.burst_sent}: {run.burst_suppressed} suppressed, "
            f"expected {run.burst_sent - 1}"
        )
    if run.recordings_after_duplicate != run.recordings_before_duplicate:
        problems.append("a duplicate command started a new recording")
    if not run.duplicate_acks or any(
        not a.endswith(AckStatus.ALREADY_RECORDING.value) for a in run.duplicate_acks
    ):
        problems.append(f"duplicate command acks: {run.duplicate_acks}")
    return {
        "ok": not problems,
        "activations": activations,
        "duplicate_burst": {"sent": run.burst_sent, "suppressed": run.burst_suppressed},
        "duplicate_command": {
            "acks": len(run.duplicate_acks),
            "all_already_recording": bool(run.duplicate_acks)
            and all(a.endswith(AckStatus.ALREADY_RECORDING.value) for a in run.duplicate_acks),
            "new_recordings": run.recordings_after_duplicate - run.recordings_before_duplicate,
        },
        "idle_out_of_range": [c for c in FAR_CAMERAS if c not in far_recorded],
        "problems": problems,
    }
