"""CAN live: the vehicle simulator on a python-can bus → the gateway's CAN source →
activation → mosquitto → camera acks. And the CLI across processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import can
import cantools
import yaml

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.protocol.models import ActivationState, TriggerKind
from tests.harness import UNIT, make_gateway, running_mesh, wait_until
from tests.integration.test_cli import daemon, run
from tests.unit.test_can_rules import FORD_RULES, PT
from triggers.can.engine import RuleEngine
from triggers.can.factory import build_engine
from triggers.can.rules import load_rules
from triggers.can.simulator import BackgroundTraffic, MessagePlan, Scenario, Step, Synthetic, play
from triggers.can.simulator import VehicleSimulator as Vehicle
from triggers.can.source import CanTriggerSource

REPO = Path(__file__).resolve().parents[2]


def source(can_data: Path, channel: str) -> CanTriggerSource:
    return CanTriggerSource(
        build_engine(FORD_RULES, [can_data / PT]),
        unit_id=UNIT,
        bus_factory=lambda filters: can.Bus(
            interface="virtual", channel=channel, can_filters=filters
        ),
        channel=f"virtual:{channel}",
        tick_s=0.05,
    )


def vehicle(can_data: Path, steps: list[Step], duration: float = 4.0) -> Vehicle:

    scenario = Scenario(
        duration_s=duration,
        messages={
            "StrgWheel_PolicePkg": MessagePlan(cycle_ms=50),
            "BodyInformation_2": MessagePlan(cycle_ms=50),
        },
        steps=steps,
        background=BackgroundTraffic(synthetic=Synthetic(ids=20, rate_hz=500)),
    )
    return Vehicle(scenario, [cantools.database.load_file(str(can_data / PT))])


async def test_light_bar_on_the_bus_is_confirmed_by_the_cameras(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, can_data: Path
) -> None:
    channel = f"t-{uuid.uuid4().hex[:8]}"
    src = source(can_data, channel)
    gateway = make_gateway(
        mosquitto.url, topics, tmp_path / "log.db", sources=[src], client_id=f"can-{topics.prefix}"
    )
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", gateway=gateway) as mesh:
        car = vehicle(can_data, [Step(at=0.5, set={"PoliceAux1Lamp_B_Rq": 1})], duration=1.5)
        with can.Bus(interface="virtual", channel=channel) as bus:
            await play(car.frames(), bus)
        await wait_until(lambda: mesh.gateway.coordinator.counters["activations.started"] == 1)
        await mesh.gateway.coordinator.tasks.wait(10)
        await wait_until(lambda: any(r.state != "pending" for r in mesh.watcher.records.values()))
        records = [r for r in mesh.watcher.records.values() if r.state != "pending"]
        assert len(records) == 1
        record = records[0]
        assert record.trigger.kind is TriggerKind.EMERGENCY_LIGHTS
        assert (record.trigger.source.type, record.trigger.source.id) == ("can", "can:lightbar")
        assert record.state is ActivationState.CONFIRMED
        assert {c.camera_id for c in record.cameras} == {"dash-12", "bwc-12a", "bwc-7a"}
        # The bus filters passed only the rule ids: the synthetic noise never reached it.
        assert src.engine.counters["frames"] < 100
        counters = mesh.gateway.all_counters()
        assert counters["can.events"] == 1


async def test_the_source_reopens_a_failed_bus_and_keeps_firing(can_data: Path) -> None:
    channel = f"t-{uuid.uuid4().hex[:8]}"
    src = source(can_data, channel)
    await src.start()
    events = []

    async def collect() -> None:
        async for event in src.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    try:
        assert src._bus is not None
        src._bus.shutdown()  # the adapter goes away under the reader
        await wait_until(lambda: src.counters["reopened"] == 1, timeout_s=5)
        assert src.counters["bus_errors"] == 1
        car = vehicle(can_data, [Step(at=0.2, set={"PoliceAux1Lamp_B_Rq": 1})], duration=0.6)
        with can.Bus(interface="virtual", channel=channel) as bus:
            await play(car.frames(), bus)
        await wait_until(lambda: len(events) == 1)
        assert events[0].kind is TriggerKind.EMERGENCY_LIGHTS
    finally:
        await src.stop()
        collector.cancel()


async def test_signal_loss_is_reported_live(can_data: Path) -> None:
    channel = f"t-{uuid.uuid4().hex[:8]}"
    src = source(can_data, channel)
    await src.start()
    try:
        car = vehicle(can_data, [], duration=0.5)
        with can.Bus(interface="virtual", channel=channel) as bus:
            await play(car.frames(), bus)
        # Learned period 50 ms: silence for 5 periods is a loss.
        await wait_until(lambda: "lightbar" in src.lost_signals(), timeout_s=5)
        assert src.health()["signals_lost"] >= 1
    finally:
        await src.stop()


async def test_a_silent_bus_is_reported_from_the_start(can_data: Path) -> None:
    """Nothing on the bus at all (a dead or miswired bus): every rule is reported lost
    after silence_s, though no frame ever gave the source a bus clock."""
    rules = load_rules(FORD_RULES).model_copy(update={"silence_s": 0.3})
    channel = f"t-{uuid.uuid4().hex[:8]}"
    src = CanTriggerSource(
        RuleEngine.compile(rules, [cantools.database.load_file(str(can_data / PT))]),
        unit_id=UNIT,
        bus_factory=lambda filters: can.Bus(
            interface="virtual", channel=channel, can_filters=filters
        ),
        tick_s=0.05,
    )
    await src.start()
    try:
        await wait_until(lambda: len(src.lost_signals()) == len(rules.rules), timeout_s=5)
        assert src.health()["signals_lost"] == len(rules.rules)
    finally:
        await src.stop()


async def test_a_bus_that_keeps_failing_is_retried_ever_more_slowly(can_data: Path) -> None:
    """A bus that opens and fails at once (a link that is down): reopened after 0.2,
    0.4, 0.8, 1.6 s …, not five times a second."""
    channel = f"t-{uuid.uuid4().hex[:8]}"

    def broken(filters: list[dict[str, object]]) -> can.BusABC:
        bus = can.Bus(interface="virtual", channel=channel, can_filters=filters)
        bus.shutdown()  # every read fails: CanOperationError, as python-can raises it
        return bus

    src = CanTriggerSource(
        build_engine(FORD_RULES, [can_data / PT]), unit_id=UNIT, bus_factory=broken
    )
    await src.start()
    try:
        await asyncio.sleep(2.5)
        # 0.2 + 0.4 + 0.8 = 1.4 s for three reopens; the fourth is due at 3.0 s.
        assert src.counters["reopened"] == 3
        assert src.counters["bus_errors"] == 4
    finally:
        await src.stop()
    before = dict(src.counters)
    await asyncio.sleep(1.0)
    assert dict(src.counters) == before  # stopped for good: no reopening after stop


def test_can_replay_cli_json(can_data: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "drive.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "duration_s": 4,
                "messages": {
                    "StrgWheel_PolicePkg": {"cycle_ms": 100},
                    "EngVehicleSpThrottle_CG1": {"cycle_ms": 20, "signals": {"Veh_V_ActlEng": 80}},
                },
                "steps": [
                    {"at": 1.0, "set": {"PoliceAux1Lamp_B_Rq": 1}},
                    {"at": 1.5, "set": {"Veh_V_ActlEng": 140}},
                ],
                "background": {"log": str(can_data / "icsim_background.log")},
            }
        )
    )
    log = tmp_path / "drive.log"
    made = run(
        "vehicle-sim", "--dbc", str(can_data / PT), "--scenario", str(scenario), "--out", str(log)
    )
    assert made.returncode == 0, made.stderr
    out = run(
        "can-replay", str(log), "--dbc", str(can_data / PT), "--rules", str(FORD_RULES), "--json"
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(x["kind"], x["rule"]) for x in lines] == [
        ("emergency_lights", "lightbar"),
        ("speed", "speed-over-130"),
    ]
    start = next(iter(can.LogReader(str(log)))).timestamp
    assert round(lines[0]["t"] - start, 3) == 1.0
    assert round(lines[1]["t"] - start, 2) == 2.5  # 1 s hold
    again = run(
        "can-replay", str(log), "--dbc", str(can_data / PT), "--rules", str(FORD_RULES), "--json"
    )
    assert again.stdout == out.stdout  # deterministic


def test_can_cli_errors_exit_2(can_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{name: x, kind: door, message: Nope, signal: S, value: 1}]\n")
    result = run(
        "can-replay",
        str(can_data / "icsim_background.log"),
        "--dbc",
        str(can_data / PT),
        "--rules",
        str(bad),
    )
    assert result.returncode == 2
    assert "rule 'x'" in result.stderr
    assert "in none of the DBC files" in " ".join(result.stderr.split())

    # A scenario value the signal cannot carry: named, with its message and time.
    scenario = tmp_path / "drive.yaml"
    scenario.write_text(
        "duration_s: 1\nmessages: {TransGearData: {cycle_ms: 100}}\n"
        "steps: [{at: 0.5, set: {GearLvrPos_D_Actl: 99}}]\n"
    )
    common = ["--dbc", str(can_data / PT), "--scenario", str(scenario)]
    result = run("vehicle-sim", *common, "--out", str(tmp_path / "drive.log"))
    assert result.returncode == 2
    assert "'TransGearData' at t=0.500 s: cannot encode" in " ".join(result.stderr.split())
    result = run("vehicle-sim", *common, "--bus", "virtual:x", "--bus-opt", "oops")
    assert result.returncode == 2
    assert "--bus-opt 'oops': expected KEY=VALUE" in " ".join(result.stderr.split())


def test_can_diff_cli_finds_the_durango_candidate(can_data: Path, tmp_path: Path) -> None:
    log = can_data / "durango_dooropen.log"
    result = run("can-diff", str(log), "--split-at", "1.0", "--json")
    assert result.returncode == 0, result.stderr
    candidates = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"frame_id": "0x324", "byte": 5, "bit": 4} in [
        {k: c[k] for k in ("frame_id", "byte", "bit")} for c in candidates[:3]
    ]
    # Its rule, with a name and a kind added, is a working rules file.
    door = next(c for c in candidates if c["frame_id"] == "0x324")
    rules = tmp_path / "durango.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"name": "door", "kind": "door", **door["rule"]}]}))
    out = run("can-replay", str(log), "--dbc", str(can_data / PT), "--rules", str(rules), "--json")
    assert out.returncode == 0, out.stderr
    start = next(iter(can.LogReader(str(log)))).timestamp
    assert [
        (x["rule"], round(x["t"] - start, 3)) for x in map(json.loads, out.stdout.splitlines())
    ] == [("door", 1.148)]


def test_vehicle_to_gateway_over_udp_multicast_in_other_processes(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, can_data: Path
) -> None:
    group = "239.74.163.2"
    port = str(43_000 + (uuid.uuid4().int % 2000))
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "unit": "car-12",
                "broker": str(mosquitto.url),
                "topic_prefix": topics.prefix,
                "log": str(tmp_path / "car-12.db"),
                "position": {"lat": 39.952583, "lon": -75.165222},
                "can": {
                    "interface": "udp_multicast",
                    "channel": group,
                    "dbc": [str(can_data / PT)],
                    "rules": str(FORD_RULES),
                    "options": {"port": int(port)},
                },
            }
        )
    )
    scenario = tmp_path / "drive.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "duration_s": 2.0,
                "messages": {"StrgWheel_PolicePkg": {"cycle_ms": 100}},
                "steps": [{"at": 0.8, "set": {"PoliceAux1Lamp_B_Rq": 1}}],
            }
        )
    )
    common = ["--broker", str(mosquitto.url), "--prefix", topics.prefix]
    with (
        daemon("gateway", "--config", str(config), "--log-format", "json") as gw,
        daemon("cameras", "--count", "3", "--spread-m", "30", *common),
        daemon("tail", "--json", *common) as tail,
    ):
        time.sleep(3)
        assert gw.poll() is None
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "mesh",
                "vehicle-sim",
                "--dbc",
                str(can_data / PT),
                "--scenario",
                str(scenario),
                "--bus",
                f"udp_multicast:{group}",
                "--bus-opt",
                f"port={port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=REPO,
        )
        assert sim.returncode == 0, sim.stderr
        time.sleep(1.5)
    finals = [json.loads(line) for line in tail.stdout.read().splitlines() if line.strip()]
    finals = [r for r in finals if r["state"] != "pending"]
    assert len(finals) == 1
    assert (finals[0]["trigger"]["kind"], finals[0]["trigger"]["source"]["type"]) == (
        "emergency_lights",
        "can",
    )
    assert finals[0]["state"] == "confirmed"
