"""``trigger-mesh demo``: the whole path on one machine, with a scripted scenario.

An embedded broker (or ``--broker``), a virtual BLE radio (bumble), a gateway for unit
car-12 that listens to it, 20 simulated cameras around the car (four of them kilometres
away), two authenticated BLE sensors (a holster, a TASER), and a script:

1. the light bar goes on: the body module says so on the car's CAN bus (a python-can virtual
   bus), and the light-bar rule of the shipped Ford rules turns it into a trigger;
2. the officer draws: the holster sensor repeats its advert for most of a second, over
   the radio; one activation;
3. the TASER is armed, over the radio;
4. the officer, 300 m north on foot, presses record: a manual trigger with a position;
5. someone re-broadcasts the captured holster advert: rejected as a replay;
6. the weapon-draw command is delivered a second time: nothing new starts.

Everything travels as in production: real advertising PDUs through bumble's virtual link,
MQTT through the broker. The summary is read from the activation records dispatch gets
and from the gateway's log of its targeting decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import can
import cantools
from bleak import BleakScanner
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from bridge.mqtt.client import LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.embedded import EmbeddedBroker
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.audit.replay import Replayer
from mesh.camera.agent import CameraAgent
from mesh.camera.recorder import SimulatedRecorder
from mesh.decide.admission import activation_id_for
from mesh.decide.fanout import command_topics
from mesh.decide.geo import offset
from mesh.decide.policy import Policy
from mesh.decide.stats import percentile
from mesh.dispatch.literal import literal, literal_console
from mesh.dispatch.render import Col, activation_table, fitted_table
from mesh.dispatch.watch import ActivationWatcher
from mesh.gateway.build import build_gateway, config_in_code
from mesh.gateway.daemon import Gateway
from mesh.journal.chain import Verdict, verify_chain
from mesh.journal.records import ActivationEntry, RecordKind
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import log_id_of, read_records
from mesh.ops.runtime import settle_heap, tune_gc
from mesh.protocol.codec import encode
from mesh.protocol.models import (
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
from mesh.security.checks import Security
from mesh.security.keys import new_gateway_key
from mesh.sim.camera_fleet import CameraSpec, build_agents, wait_all_up
from mesh.sim.demo_video import RealVideo
from mesh.sim.demo_video import buffered as video_buffered
from mesh.sim.demo_video import prepare as prepare_video
from mesh.sim.demo_video import problems_of as video_problems
from mesh.sim.demo_video import stop_all as stop_videos
from mesh.sim.demo_video import verify_all as verify_videos
from triggers.ble.bumble_backend import BumbleScanner
from triggers.ble.format import SensorEvent, SensorKind
from triggers.ble.freshness import CounterStore
from triggers.ble.keystore import Keystore, SensorKeyFile
from triggers.ble.sensor import SimulatedSensor
from triggers.ble.source import BleSourceSettings, BleTriggerSource
from triggers.ble.virtual import VirtualRadio
from triggers.can.engine import RuleEngine
from triggers.can.rules import RuleConfig, RulesFile, compile_rules
from triggers.can.simulator import (
    BackgroundTraffic,
    MessagePlan,
    Scenario,
    Step,
    Synthetic,
    VehicleSimulator,
    play,
)
from triggers.can.source import CanTriggerSource
from triggers.manual import manual_trigger

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mesh.sim.demo_secure import AttackReport, SecureSetup

UNIT = "car-12"
GATEWAY_ID = f"gw-{UNIT}"
DEMO_DBC = Path(__file__).resolve().parent / "data" / "demo-vehicle.dbc"
# The patrol car: the four messages of the demo DBC at plausible periods, 50 kph, the light
# bar switched on 0.6 s in, and 800 frames/s of other ECUs' traffic around them.
VEHICLE = Scenario(
    duration_s=600,
    messages={
        "StrgWheel_PolicePkg": MessagePlan(cycle_ms=100),
        "EngVehicleSpThrottle_CG1": MessagePlan(cycle_ms=20, signals={"Veh_V_ActlEng": 50}),
        "BodyInformation_2": MessagePlan(cycle_ms=100),
        "VehEmergencyData1": MessagePlan(cycle_ms=100),
    },
    steps=[Step(at=0.6, set={"PoliceAux1Lamp_B_Rq": 1})],
    background=BackgroundTraffic(synthetic=Synthetic(ids=30, rate_hz=800)),
)
# Philadelphia City Hall; any point works, this one is easy to check on a map.
CENTER = GeoPoint(lat=39.952583, lon=-75.165222)
PURSUIT_OFFSET_M = (300.0, 0.0)
HOLSTER_ID, TASER_ID = 1001, 2001
# The sensors repeat each advert for this long; repeats within the burst window are one
# event, so the window must be longer. The replay comes well after it.
SENSOR_REPEAT_S = 0.8
BURST_WINDOW_S = 1.5

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
class Stage:
    """Everything that runs during the demo."""

    topics: Topics
    log: Path
    agents: list[CameraAgent]
    gateway: Gateway
    ble: BleTriggerSource
    watcher: ActivationWatcher
    driver: MqttLink
    holster: SimulatedSensor
    taser: SimulatedSensor
    attacker: SimulatedSensor
    can_source: CanTriggerSource
    vehicle: VehicleSimulator
    vehicle_bus: can.BusABC
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    # --secure: the locked-down broker and everyone's keys; the driver is the in-car
    # terminal and signs its triggers with the gateway's key.
    secure: SecureSetup | None = None
    captured: dict[str, bytes] = field(default_factory=dict)
    # The public half of the run's log key: the audit at the end pins it, as an auditor
    # pins the gateway's key (audit verify --pubkey).
    log_key: Ed25519PublicKey | None = None
    # --real-video: the cameras that really record, their keys and files.
    video: RealVideo | None = None

    def seal(self, event: TriggerEvent) -> bytes:
        """The trigger as the in-car terminal sends it: signed with --secure."""
        if self.secure is None:
            return encode(event)
        return self.secure.security(self.gateway.settings.issuer).seal(event)


@dataclass
class DemoRun:
    """What happened, gathered while the scenario runs."""

    activation_ids: list[str] = field(default_factory=list)
    draw_adverts: int = 0
    draw_activations: int = 0
    replay_adverts: int = 0
    replays_rejected: int = 0
    replay_activations: int = 0
    duplicate_acks: list[str] = field(default_factory=list)
    redelivery_acks: int = 0
    recordings_before_duplicate: int = 0
    recordings_after_duplicate: int = 0
    attacks: AttackReport | None = None
    problems: list[str] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)  # --real-video
    central: dict[str, Any] | None = None  # --central


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
    secure: bool = False,
    video_dir: Path | None = None,
    central_db: str | None = None,
    stay: bool = False,
) -> dict[str, Any]:
    """Run the scenario; return the summary (``ok`` says whether it held). ``secure``:
    on a locked-down mosquitto with signatures, then the attacks (mesh.sim.demo_secure).
    ``video_dir``: two cameras really record, into a folder of this run there
    (mesh.sim.demo_video). ``central_db``: as ``secure``, with the car bridged to a NATS
    cluster, archivers writing into this PostgreSQL and a console (mesh.sim.demo_central);
    ``stay``: then keep it all running until cancelled (Ctrl-C)."""
    console = console or literal_console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    # A private prefix and client ids, so a demo on a shared broker touches nothing else.
    topics = Topics(f"mesh/v2/demo-{run_id}") if broker else Topics()
    with tempfile.TemporaryDirectory(prefix="trigger-mesh-demo-") as tmp:
        log = log_path or Path(tmp) / "activations.db"
        if central_db is not None:
            return await _run_central(
                topics,
                log,
                Path(tmp),
                run_id=run_id,
                console=console,
                live=live,
                dsn=central_db,
                stay=stay,
            )
        if secure:
            return await _run_secure(
                topics, log, Path(tmp), run_id=run_id, console=console, live=live
            )
        async with _broker(broker) as (url, protocol, broker_kind):
            console.print(
                literal(
                    ("trigger-mesh demo", "bold"), f" broker: {broker_kind} at {url}; log: {log}"
                )
            )
            video = None if video_dir is None else prepare_video(video_dir, run_id)
            if video is not None:
                console.print(f"real video: bwc-12a and bwc-12b record into {video.directory}")
            stage = await _build(
                url, protocol, topics, log=log, tmp=Path(tmp), run_id=run_id, video=video
            )
            return await _perform(
                stage, url, protocol, console, live, shared_broker=broker is not None
            )


async def _run_secure(
    topics: Topics, log: Path, tmp: Path, *, run_id: str, console: Console, live: bool
) -> dict[str, Any]:
    # Imported here: the PKI (cryptography) is not needed by the plain demo.
    from mesh.sim.demo_secure import DISPATCH_ID, command_tap, secure_broker

    async with secure_broker(tmp, topics, GATEWAY_ID, UNIT, demo_specs()) as setup:
        url = setup.url(DISPATCH_ID)
        console.print(
            literal(
                ("trigger-mesh demo --secure", "bold"),
                f" broker: mosquitto, TLS + client certificates + ACL at {url.host}:{url.port} "
                f"({setup.bundle.out_dir}); every command and ack signed; log: {log}",
            )
        )
        stage = await _build(url, "auto", topics, log=log, tmp=tmp, run_id=run_id, secure=setup)
        async with command_tap(setup, topics) as captured:
            stage.captured = captured
            return await _perform(stage, url, "auto", console, live, shared_broker=False)


async def _run_central(
    topics: Topics,
    log: Path,
    tmp: Path,
    *,
    run_id: str,
    console: Console,
    live: bool,
    dsn: str,
    stay: bool,
) -> dict[str, Any]:
    # Imported here: PostgreSQL, NATS and the console are extras the plain demo lacks.
    from mesh.archive.db import describe
    from mesh.sim.demo_central import CENTRAL_SETTLE_S, CONSOLE_USER, central_tier
    from mesh.sim.demo_secure import DISPATCH_ID, command_tap

    async with central_tier(tmp, topics, GATEWAY_ID, UNIT, demo_specs(), dsn=dsn) as tier:
        setup = tier.car
        url = setup.url(DISPATCH_ID)
        nodes = ", ".join(f"{n.name} mqtts :{n.mqtt_port}" for n in tier.layout.central.nodes)
        archivers = ", ".join(a.settings.archiver_id for a in tier.archivers)
        console.print(
            literal(
                ("trigger-mesh demo --central", "bold"),
                f" NATS JetStream cluster ({nodes}); the car's mosquitto at :{setup.bundle.port}"
                f" bridged to it; archivers {archivers}"
                f" into {describe(tier.dsn)}; console {tier.console_url} (user {CONSOLE_USER},"
                f" password {tier.console_password}); configs in {tier.layout.car.out_dir}",
            )
        )
        stage = await _build(url, "auto", topics, log=log, tmp=tmp, run_id=run_id, secure=setup)

        async def at_central(run: DemoRun) -> None:
            finals = {
                a: stage.watcher.records[a].state.value
                for a in run.activation_ids
                if a in stage.watcher.records
            }
            run.problems += await tier.settled(finals, CENTRAL_SETTLE_S)
            run.central = {
                "nodes": [n.name for n in tier.layout.central.nodes],
                "archived": await tier.archived_states(list(finals)),
                "console_saw": tier.console_states(list(finals)),
                "console": tier.console_url,
                "archive": describe(tier.dsn),
            }
            if stay:
                console.print("running until Ctrl-C")
                await _until_cancelled()

        async with command_tap(setup, topics) as captured:
            stage.captured = captured
            return await _perform(
                stage, url, "auto", console, live, shared_broker=False, after=at_central
            )


async def _until_cancelled() -> None:
    """Wait for Ctrl-C; then the demo stops everything and still reports."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancel was the stop we waited for: carry on to the summary


async def _build(
    url: BrokerUrl,
    protocol: ProtocolChoice,
    topics: Topics,
    *,
    log: Path,
    tmp: Path,
    run_id: str,
    secure: SecureSetup | None = None,
    video: RealVideo | None = None,
) -> Stage:
    tune_gc()
    agents = build_agents(
        demo_specs(),
        url=url,
        topics=topics,
        protocol=protocol,
        client_prefix=f"demo-{run_id}-",
        now_ns=time.time_ns(),
        url_of=None if secure is None else secure.camera_url(),
        security_of=(
            secure.camera_security()
            if secure is not None
            else video.security_of
            if video is not None
            else None
        ),
        recorder_of=None if video is None else video.recorder_of,
    )
    radio = VirtualRadio()
    keystore = Keystore()
    holster_key = keystore.provision(
        SensorKind.HOLSTER, UNIT, officer="Ofc. Rivera #4411", sensor_id=HOLSTER_ID
    )
    taser_key = keystore.provision(
        SensorKind.TASER, UNIT, officer="Ofc. Rivera #4411", sensor_id=TASER_ID
    )
    scanner_device = await radio.device("gateway")
    ble = BleTriggerSource(
        keystore=keystore,
        scanner_factory=lambda callback: BleakScanner(
            callback, backend=BumbleScanner, bumble={"device": scanner_device}
        ),
        settings=BleSourceSettings(burst_window_s=BURST_WINDOW_S),
        counters=CounterStore(tmp / "ble-counters.db"),
    )
    # The car's CAN bus: a python-can virtual bus, the light-bar rule of the shipped Ford
    # rules (configs/can/ford-police-interceptor.yaml) over the demo's own DBC.
    bus_channel = f"trigger-mesh-demo-{run_id}"
    databases = [cantools.database.load_file(str(DEMO_DBC))]
    lightbar = RulesFile(
        rules=[
            RuleConfig(
                name="lightbar",
                kind=TriggerKind.EMERGENCY_LIGHTS,
                message="StrgWheel_PolicePkg",
                signal="PoliceAux1Lamp_B_Rq",
                op="==",
                value=1,
                release_ms=500,
            )
        ]
    )
    can_source = CanTriggerSource(
        RuleEngine(compile_rules(lightbar, databases)),
        unit_id=UNIT,
        bus_factory=lambda filters: can.Bus(
            interface="virtual", channel=bus_channel, can_filters=filters
        ),
        channel=f"virtual:{bus_channel}",
    )
    # The log is signed as a real gateway's is: a fresh key for this run, checked at the end
    # (signed, the gateway's own, which the trust store holds: the archive then trusts it).
    if secure is None:
        signer = CheckpointSigner.from_file(new_gateway_key(tmp / "keys", "demo-gateway").private)
    else:
        signer = CheckpointSigner(secure.keys[GATEWAY_ID])
    gateway_url = url if secure is None else secure.url(GATEWAY_ID)
    gateway = build_gateway(
        config_in_code(UNIT, log, gateway_id=GATEWAY_ID, topics=topics, position=CENTER),
        Policy(),
        url=gateway_url,
        protocol=protocol,
        client_id=f"demo-{run_id}-gw",
        sources=[ble, can_source],
        signer=signer,
        security=Security() if secure is None else secure.security(GATEWAY_ID),
    )
    return Stage(
        topics=topics,
        log=log,
        agents=agents,
        gateway=gateway,
        ble=ble,
        watcher=ActivationWatcher(url, topics, client_id=f"demo-{run_id}-watch", protocol=protocol),
        driver=MqttLink(
            gateway_url,
            LinkOptions(f"demo-{run_id}-driver", persistent_session=False, protocol=protocol),
        ),
        holster=SimulatedSensor(await radio.device("holster"), SensorKeyFile.of(holster_key)),
        taser=SimulatedSensor(await radio.device("taser"), SensorKeyFile.of(taser_key)),
        attacker=SimulatedSensor(await radio.device("attacker"), SensorKeyFile.of(holster_key)),
        can_source=can_source,
        vehicle=VehicleSimulator(VEHICLE, databases),
        vehicle_bus=can.Bus(interface="virtual", channel=bus_channel),
        secure=secure,
        log_key=signer.public_key,
        video=video,
    )


async def _perform(
    stage: Stage,
    url: BrokerUrl,
    protocol: ProtocolChoice,
    console: Console,
    live: bool,
    *,
    shared_broker: bool,
    after: Callable[[DemoRun], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run the fleet and the scenario; ``after`` runs once it is done, the fleet still up."""
    agents, gateway, watcher = stage.agents, stage.gateway, stage.watcher
    tasks = [asyncio.create_task(a.run()) for a in agents]
    tasks += [
        asyncio.create_task(gateway.run()),
        asyncio.create_task(watcher.run()),
        asyncio.create_task(stage.driver.run(lambda _m: None)),
    ]
    run = DemoRun()
    try:
        async with asyncio.timeout(15):
            await gateway.ready.wait()
        await wait_all_up(agents, 15)
        await watcher.link.wait_up(15)
        await stage.driver.wait_up(15)
        # Retained presence of all 20 cameras reaches the gateway on its subscription.
        if not await _until(lambda: len(gateway.presence) >= len(agents), 10):
            run.problems.append(f"gateway saw {len(gateway.presence)} of {len(agents)} cameras")
        if stage.video is not None:
            run.problems += await video_buffered(stage.video)
        settle_heap()
        # A terminal's width: the tables drop low-priority columns to fit, never ids.
        width = console.width if console.is_terminal else None
        screen = (
            Live(_view(stage, width), console=console, refresh_per_second=8, transient=False)
            if live
            else None
        )
        with screen or contextlib.nullcontext():
            refresher = asyncio.create_task(_refresh(screen, stage, width)) if screen else None
            try:
                await _script(stage, run)
                if stage.video is not None:
                    # The officer's stops, then (once the gateway has logged them, with
                    # their manifests' hashes) the auditor's check of every recording.
                    counters = gateway.coordinator.counters
                    expected = counters["recordings.stop"] + await stop_videos(stage.video, agents)
                    if not await _until(lambda: counters["recordings.stop"] >= expected, 10):
                        run.problems.append("the real cameras' stops were not logged within 10 s")
                    run.recordings = verify_videos(stage.video)
                    run.problems += video_problems(run.recordings)
                if after is not None:
                    await after(run)
            finally:
                if refresher is not None:
                    refresher.cancel()
            if screen is not None:
                screen.update(_view(stage, width))
    finally:
        for task in [*stage.background, *tasks]:
            task.cancel()
        await asyncio.gather(*stage.background, *tasks, return_exceptions=True)
        stage.vehicle_bus.shutdown()
        if shared_broker:
            retained = [stage.topics.presence(a.identity.camera_id) for a in agents]
            await _clear_retained(
                url, protocol, [*retained, stage.topics.gateway(gateway.settings.issuer)]
            )
    return _summary(run, stage)


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


async def _refresh(screen: Live, stage: Stage, width: int | None) -> None:
    while True:
        await asyncio.sleep(0.125)
        screen.update(_view(stage, width))


_DEMO_CAMERA_COLUMNS = (
    Col("camera", 0, is_id=True),
    Col("unit", 90),
    Col("role", 30),
    Col("recording", 100),
    Col("activations", 50, "right"),
    Col("acks", 40, "right"),
)


def _view(stage: Stage, width: int | None = None) -> Group:
    now = time.time_ns()
    cams = fitted_table(
        _DEMO_CAMERA_COLUMNS,
        (
            (
                agent.identity.camera_id,
                agent.identity.unit_id,
                agent.identity.role.value,
                Text("● rec" if agent.recorder.device_source else "● rec (sim)", style="green")
                if agent.recorder.is_recording(now)
                else Text("idle", style="dim"),
                str(_activations_acted_on(agent)),
                str(len(agent.acks_sent)),
            )
            for agent in stage.agents
        ),
        title="Cameras",
        width=width,
    )
    c = stage.ble.counters
    radio = (
        f"BLE: {c['adverts']} adverts heard, {c['events']} events, {c['repeats']} repeats, "
        f"{c['rejected.replay']} replays rejected"
    )
    return Group(activation_table(stage.watcher.records.values(), width=width), cams, radio)


def _receipt_for(stage: Stage, prefix: str) -> str | None:
    """The event id of the first receipt whose trigger's id starts with ``prefix``."""
    return next((i for i in stage.watcher.receipts if i.startswith(prefix)), None)


async def _outcome(stage: Stage, run: DemoRun, label: str, event_id: str) -> str | None:
    """Wait for the gateway's receipt of a trigger and the activation's final record."""
    receipt = await stage.watcher.receipt(event_id, 10)
    # A copy of the trigger (the car's own, echoed by a NATS central) is answered as a
    # repeat naming the trigger's own activation: accepted all the same.
    own = receipt is not None and receipt.activation_id == activation_id_for(event_id)
    if receipt is None or (receipt.outcome is not ReceiptOutcome.ACCEPTED and not own):
        run.problems.append(f"{label}: trigger not accepted ({receipt})")
        return None
    assert receipt.activation_id is not None
    run.activation_ids.append(receipt.activation_id)
    if await stage.watcher.final_record(receipt.activation_id, 15) is None:
        run.problems.append(f"{label}: activation {receipt.activation_id} did not finish")
    return receipt.activation_id


async def _manual(stage: Stage, run: DemoRun, label: str, event: TriggerEvent) -> str | None:
    await stage.driver.publish(stage.topics.trigger(UNIT), stage.seal(event), qos=1)
    return await _outcome(stage, run, label, event.event_id)


async def _sensor(
    stage: Stage, run: DemoRun, label: str, sensor: SimulatedSensor, event: SensorEvent
) -> str | None:
    advert = await sensor.emit(event, duration_s=SENSOR_REPEAT_S)
    return await _outcome(stage, run, label, f"ble-{advert.sensor_id}-{advert.counter}")


async def _script(stage: Stage, run: DemoRun) -> None:
    # 1. The car drives; the light bar goes on and the body module says so on the CAN bus.
    driving = asyncio.create_task(play(stage.vehicle.frames(), stage.vehicle_bus))
    stage.background.append(driving)
    if await stage.watcher.wait_for(
        lambda: _receipt_for(stage, "can-car-12-lightbar-") is not None, 10
    ):
        await _outcome(
            stage, run, "light bar on (CAN)", _receipt_for(stage, "can-car-12-lightbar-") or ""
        )
    else:
        run.problems.append("light bar on (CAN): no trigger from the CAN bus")
    await asyncio.sleep(0.5)

    # 2. A weapon is drawn: the holster repeats its advert ~30 times a second.
    holster = stage.ble.sensors.get(str(HOLSTER_ID))
    before = holster.adverts if holster else 0
    started = len(stage.watcher.records)
    draw_id = await _sensor(stage, run, "weapon draw (BLE)", stage.holster, SensorEvent.DRAW)
    run.draw_adverts = stage.ble.sensors[str(HOLSTER_ID)].adverts - before
    run.draw_activations = len(stage.watcher.records) - started
    await asyncio.sleep(0.3)

    # 3. The TASER is armed.
    await _sensor(stage, run, "TASER armed (BLE)", stage.taser, SensorEvent.ARM)
    await asyncio.sleep(0.3)

    # 4. 300 m north, on foot, the officer presses record on the body camera.
    lat, lon = offset(CENTER.lat, CENTER.lon, *PURSUIT_OFFSET_M)
    here = Position(lat=lat, lon=lon, accuracy_m=8.0, fix_at_ns=time.time_ns())
    await _manual(
        stage,
        run,
        "record pressed 300 m north",
        manual_trigger(TriggerKind.MANUAL, UNIT, source_id="demo:bwc-12a-button", position=here),
    )

    # 5. Someone replays the holster advert they captured: the counter was used.
    rejected, started = stage.ble.counters["rejected.replay"], len(stage.watcher.records)
    heard = stage.ble.counters["adverts"]
    await stage.attacker.broadcast(stage.holster.last_data, duration_s=0.5)
    await asyncio.sleep(0.5)
    run.replay_adverts = stage.ble.counters["adverts"] - heard
    run.replays_rejected = stage.ble.counters["rejected.replay"] - rejected
    run.replay_activations = len(stage.watcher.records) - started

    if stage.secure is not None:
        # 6'. On the locked-down broker: four attackers (mesh.sim.demo_secure).
        from mesh.sim.demo_secure import play_attacks

        run.attacks = await play_attacks(
            stage.secure,
            stage.topics,
            stage.agents,
            stage.captured.get(draw_id or ""),
            gateway_id=GATEWAY_ID,
            unit_id=UNIT,
        )
        return
    # 6. The weapon-draw command arrives a second time on every topic it went out on (a
    # QoS1 redelivery, a bridge): the cameras answered it already and stay silent. Then it
    # comes straight to one camera, as a gateway's retry does: answered, nothing started.
    if draw_id is not None:
        command = _decisions(stage.log)[draw_id].command
        agents = stage.agents
        run.recordings_before_duplicate = _simulated_recordings(agents)
        sent = {a.identity.camera_id: len(a.acks_sent) for a in agents}
        for topic in command_topics(stage.topics, command):
            await stage.driver.publish(topic, encode(command), qos=1)
        await asyncio.sleep(0.5)
        run.redelivery_acks = sum(
            1
            for agent in agents
            for ack in agent.acks_sent[sent[agent.identity.camera_id] :]
            if ack.activation_id == draw_id
        )
        direct = command.model_copy(update={"attempt": 1})
        await stage.driver.publish(stage.topics.command_camera("dash-12"), encode(direct), qos=1)
        await asyncio.sleep(0.3)
        run.recordings_after_duplicate = _simulated_recordings(agents)
        for agent in agents:
            for ack in agent.acks_sent[sent[agent.identity.camera_id] :]:
                if ack.activation_id == draw_id:
                    run.duplicate_acks.append(f"{ack.camera_id}:{ack.status.value}")


def _activations_acted_on(agent: CameraAgent) -> int:
    """Activations this camera started or joined a recording for."""
    if isinstance(agent.recorder, SimulatedRecorder):
        return len(agent.recorder.activations)
    confirmed = (AckStatus.STARTED, AckStatus.ALREADY_RECORDING)
    return len({ack.activation_id for ack in agent.acks_sent if ack.status in confirmed})


def _simulated_recordings(agents: list[CameraAgent]) -> int:
    """Recordings started by the simulated cameras (a real one's are in its files)."""
    return sum(
        agent.recorder.recordings
        for agent in agents
        if isinstance(agent.recorder, SimulatedRecorder)
    )


def _decisions(log: Path) -> dict[str, ActivationEntry]:
    return {
        row.activation_id or "": ActivationEntry.model_validate_json(row.body)
        for row in read_records(log, kinds=(RecordKind.ACTIVATION.value,))
    }


def _audit(log: Path, key: Ed25519PublicKey | None, problems: list[str]) -> dict[str, Any]:
    """What an auditor would run on this log: verify the chain against the gateway's key,
    replay every decision."""
    chain = verify_chain(read_records(log), log_id=log_id_of(log), public_key=key)
    replayed = Replayer().run(read_records(log))
    if chain.verdict is not Verdict.INTACT:
        problems.append(f"activation log does not verify: {chain.summary()}")
    if not replayed.same:
        problems.append(f"replay differs: {replayed.differences[0]}")
    return {
        "records": chain.records,
        "checkpoints": chain.checkpoints,
        "verified": chain.verdict is Verdict.INTACT,
        "verdict": chain.verdict.value,
        "triggers_replayed": replayed.triggers,
        "replay_differences": len(replayed.differences),
    }


def _command_scene_problems(run: DemoRun) -> list[str]:
    """Step 6: the duplicate command changed nothing, or (--secure) no attack worked."""
    if run.attacks is not None:
        return [] if run.attacks.held() else [f"an attack succeeded: {run.attacks.summary()}"]
    if run.recordings_after_duplicate != run.recordings_before_duplicate:
        return ["a duplicate command started a new recording"]
    if run.redelivery_acks or run.duplicate_acks != [
        f"dash-12:{AckStatus.ALREADY_RECORDING.value}"
    ]:
        return [
            f"duplicate command: {run.redelivery_acks} acks to the redelivery, "
            f"direct resend answered {run.duplicate_acks}"
        ]
    return []


def _summary(run: DemoRun, stage: Stage) -> dict[str, Any]:
    problems = list(run.problems)
    decisions = _decisions(stage.log)
    activations = []
    for activation_id in run.activation_ids:
        record = stage.watcher.records.get(activation_id)
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
                "authenticated": record.trigger.source.authenticated,
                "state": record.state.value,
                "targeted": targeted,
                "started": started,
                "newly_started": sorted(
                    c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED
                ),
                "missed": missed,
                "out_of_range": out_of_range,
                "latency_ms": {
                    "p50": percentile(latencies, 50) if latencies else None,
                    "max": max(latencies) if latencies else None,
                },
                "all_acked_ms": record.all_acked_ms,
            }
        )
    far_recorded = sorted(
        a.identity.camera_id
        for a in stage.agents
        if a.identity.camera_id in FAR_CAMERAS and a.simulated.recordings
    )
    if far_recorded:
        problems.append(f"cameras out of range recorded: {far_recorded}")
    ble_sources = [a["source"] for a in activations if a["kind"] in ("weapon_draw", "taser_arm")]
    if ble_sources != ["ble", "ble"]:
        problems.append(f"weapon draw and TASER should arrive over BLE, came from {ble_sources}")
    can_sources = [a["source"] for a in activations if a["kind"] == "emergency_lights"]
    if can_sources != ["can"]:
        problems.append(f"the light bar should arrive over CAN, came from {can_sources}")
    if run.draw_adverts < 2 or run.draw_activations != 1:
        problems.append(
            f"holster burst: {run.draw_adverts} adverts made "
            f"{run.draw_activations} activations, expected many adverts, one"
        )
    if run.replays_rejected == 0 or run.replay_activations != 0:
        problems.append(
            f"replayed advert: {run.replays_rejected} rejected, "
            f"{run.replay_activations} activations"
        )
    problems += _command_scene_problems(run)
    audit = _audit(stage.log, stage.log_key, problems)
    return {
        "ok": not problems,
        "activations": activations,
        "audit": audit,
        "duplicate_burst": {"adverts": run.draw_adverts, "activations": run.draw_activations},
        "replay": {
            "adverts": run.replay_adverts,
            "rejected": run.replays_rejected,
            "activations": run.replay_activations,
        },
        "duplicate_command": {
            "redelivery_acks": run.redelivery_acks,
            "direct_resend": run.duplicate_acks,
            "new_recordings": run.recordings_after_duplicate - run.recordings_before_duplicate,
        },
        "ble": {k: v for k, v in stage.ble.health().items() if isinstance(v, int)},
        "can": {k: v for k, v in stage.can_source.health().items() if isinstance(v, int)},
        "idle_out_of_range": [c for c in FAR_CAMERAS if c not in far_recorded],
        "security": None if run.attacks is None else run.attacks.summary(),
        "real_video": None
        if stage.video is None
        else {
            "directory": str(stage.video.directory),
            "trust": str(stage.video.trust),
            "recordings": run.recordings,
        },
        "central": run.central,
        "problems": problems,
    }
