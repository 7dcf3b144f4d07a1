"""CAN sources: rule-engine throughput against decoding every frame, and CPU at 2,000 fps.

A minute of traffic in two mixes, both with the six messages ten rules read (vehicle simulator,
Ford CGEA 1.2 DBC, at their cycle times, light bar, doors, speed and gear changing):

- ford_bus: with every other message of the same DBC as background, each at a cycle time
  of 20 ms to 1 s: what a Police Interceptor's powertrain bus looks like, every frame
  decodable. About 1,800 frames/s, one in sixteen read by a rule. The headline figures.
- icsim: with the real ICSim background capture looped instead (tests use it too). Most
  of its ids are not in the Ford DBC, so the decoder can only skip them: a kinder floor.

1. rules_frames_per_s: every frame through ``RuleEngine.process`` (the shipped Ford rules
   plus three more: ten), one core, no bus filter in front (the engine discards the other
   ids itself). Median of 5 passes, interleaved with the floor's.
2. decode_all_frames_per_s, the floor: cantools ``decode_message`` on every frame (an id
   the DBC lacks is skipped), then the same ten conditions on the decoded values (no
   hold/hysteresis state: generous to it). Median of 5 passes.
3. cpu_pct_at_2000fps: a second process sends the ford_bus traffic at 2,000 frames/s over
   python-can's udp_multicast interface; this process runs the CAN trigger source on it
   (bus filters, reader thread, engine, signal-loss ticks) for 10 s, process CPU time over
   wall time. Its floor, measured the same way just before: a bare python-can ``recv``
   loop on the same interface and filters, i.e. what the interface alone costs.

    python bench/can.py [--json] [--seconds 10] [--data ../shared/data/can] [--smoke]

With --json the last line is {"bench": "can", "rules_frames_per_s": …,
"decode_all_frames_per_s": …, "ratio": …, "cpu_pct_at_2000fps": …} (ford_bus; plus the
icsim_* figures, the floor recv_only_cpu_pct_at_2000fps, and the frame counts).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder is sys.path[0], and "import can" would find this
# bench/can.py instead of python-can.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import heapq
import json
import operator
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import can
import cantools

from mesh.ops import logs
from triggers.can.engine import RuleEngine
from triggers.can.rules import RuleConfig, RulesFile, load_rules
from triggers.can.simulator import (
    BackgroundTraffic,
    MessagePlan,
    Scenario,
    Step,
    VehicleSimulator,
    play,
)
from triggers.can.source import CanTriggerSource, bus_filters

REPO = Path(__file__).resolve().parent.parent
FORD_RULES = REPO / "configs" / "can" / "ford-police-interceptor.yaml"
PT_DBC = "ford_cgea1_2_ptcan_2011.dbc"
GROUP = "239.74.163.3"
RATE = 2000.0
TRAFFIC_S = 60.0  # of vehicle time, for the throughput passes
SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"

Frame = tuple[int, bool, bytes, float]


def ten_rules() -> RulesFile:
    shipped = load_rules(FORD_RULES)
    extra = [
        RuleConfig(
            name="lightbar-aux2",
            kind="emergency_lights",
            message="StrgWheel_PolicePkg",
            signal="PoliceAux2Lamp_B_Rq",
            op="==",
            value=1,
        ),
        RuleConfig(
            name="passenger-door",
            kind="door",
            message="BodyInformation_2",
            signal="DrStatPsngr_B_Actl",
            op="==",
            value=1,
        ),
        RuleConfig(
            name="parking-brake",
            kind="gear",
            message="BodyInformation_3",
            signal="PrkBrkActv_B_Actl",
            op="==",
            value=1,
        ),
    ]
    return RulesFile(signal_loss_cycles=shipped.signal_loss_cycles, rules=[*shipped.rules, *extra])


RULE_MESSAGES = {
    "StrgWheel_PolicePkg": 100,
    "EngVehicleSpThrottle_CG1": 20,
    "BodyInformation_2": 100,
    "BodyInformation_3": 100,
    "VehEmergencyData1": 100,
    "TransGearData": 50,
}


def scenario(data: Path, seconds: float, *, icsim: bool) -> Scenario:
    steps = []
    for k in range(int(seconds // 10)):  # every 10 s: lights, doors, a burst of speed, park
        t = k * 10.0
        steps += [
            Step(at=t + 1, set={"GearLvrPos_D_Actl": 3, "PrkBrkActv_B_Actl": 0}),
            Step(at=t + 2, set={"PoliceAux1Lamp_B_Rq": 1, "PoliceAux2Lamp_B_Rq": 1}),
            Step(at=t + 3, set={"Veh_V_ActlEng": 140}),
            Step(at=t + 6, set={"Veh_V_ActlEng": 40, "PoliceAux1Lamp_B_Rq": 0}),
            Step(at=t + 8, set={"GearLvrPos_D_Actl": 0, "PrkBrkActv_B_Actl": 1}),
            Step(at=t + 8.5, set={"DrStatDrv_B_Actl": 1, "DrStatPsngr_B_Actl": 1}),
            Step(at=t + 9.5, set={"DrStatDrv_B_Actl": 0, "DrStatPsngr_B_Actl": 0}),
        ]
    return Scenario(
        duration_s=seconds,
        messages={name: MessagePlan(cycle_ms=ms) for name, ms in RULE_MESSAGES.items()},
        steps=steps,
        background=BackgroundTraffic(log=str(data / "icsim_background.log")) if icsim else None,
    )


def ford_background(db: Any, seconds: float) -> Iterator[tuple[float, can.Message]]:
    """Every DBC message no rule reads, at a cycle time picked per message (deterministic),
    raw-zero signals and a rolling first byte: decoding cost does not depend on values."""
    cycles_ms = (20, 50, 100, 100, 200, 500, 1000, 1000)
    queue = []
    for message in db.messages:
        if message.name not in RULE_MESSAGES:
            cycle = cycles_ms[message.frame_id % len(cycles_ms)] / 1000
            phase = (message.frame_id % 97) / 97 * cycle
            queue.append((phase, message.frame_id, cycle, message.length))
    heapq.heapify(queue)
    while queue:
        t, frame_id, cycle, length = heapq.heappop(queue)
        if t >= seconds:
            continue
        data = bytes([int(t / cycle) & 0xFF]) + bytes(length - 1)
        yield t, can.Message(arbitration_id=frame_id, data=data, timestamp=t)
        heapq.heappush(queue, (t + cycle, frame_id, cycle, length))


def traffic(data: Path, seconds: float, *, icsim: bool = False) -> list[can.Message]:
    db = cantools.database.load_file(str(data / PT_DBC))
    vehicle = VehicleSimulator(scenario(data, seconds, icsim=icsim), [db]).frames()
    if icsim:
        return [msg for _, msg in vehicle]
    both = heapq.merge(vehicle, ford_background(db, seconds), key=lambda x: x[0])
    return [msg for _, msg in both]


def as_tuples(messages: Sequence[can.Message]) -> list[Frame]:
    return [(m.arbitration_id, m.is_extended_id, bytes(m.data), m.timestamp) for m in messages]


# --- 1 and 2: throughput ---------------------------------------------------------------
def rules_pass(frames: list[Frame], databases: list[Any], rules: RulesFile) -> float:
    engine = RuleEngine.compile(rules, databases)
    process = engine.process
    start = time.perf_counter()
    for frame_id, extended, data, t in frames:
        process(frame_id, extended, data, t)
    elapsed = time.perf_counter() - start
    assert engine.counters["frames"] == len(frames)
    assert engine.counters["fired"] > 0  # the rules did real work, not only discards
    return len(frames) / elapsed


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def decode_all_pass(frames: list[Frame], db: Any, rules: RulesFile) -> float:
    by_id: dict[int, list[tuple[str, Callable[[Any, Any], bool], Any]]] = {}
    for rule in rules.rules:
        message = db.get_message_by_name(rule.message)
        by_id.setdefault(message.frame_id, []).append((rule.signal, _OPS[rule.op], rule.value))
    decode = db.decode_message
    hits = 0
    start = time.perf_counter()
    for frame_id, _, data, _ in frames:
        try:
            values = decode(frame_id, data, decode_choices=False)
        except Exception:  # an id the DBC lacks, or a frame shorter than its message
            continue
        for signal, op, target in by_id.get(frame_id, ()):
            if op(values[signal], target):
                hits += 1
    elapsed = time.perf_counter() - start
    assert hits > 0
    return len(frames) / elapsed


# --- 3: CPU at a realistic rate ----------------------------------------------------------
def send(data: Path, seconds: float, port: int) -> None:
    """Child process: the traffic at exactly RATE frames/s on the multicast bus."""
    generated = 2 * seconds  # of vehicle time: enough while the bus runs at over RATE / 2
    messages = traffic(data, generated)
    natural = len(messages) / generated
    # Sped up (or slowed) to RATE, ``seconds`` of wall time is this much vehicle time:
    messages = [m for m in messages if m.timestamp < seconds * RATE / natural]
    with can.Bus(interface="udp_multicast", channel=GROUP, port=port) as bus:
        start = time.monotonic()
        sent = asyncio.run(play(((m.timestamp, m) for m in messages), bus, speed=RATE / natural))
        elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "elapsed_s": elapsed}))


def start_sender(data: Path, seconds: float, port: int) -> subprocess.Popen[str]:
    args = [sys.executable, __file__, "--send", "--data", str(data), "--seconds", str(seconds)]
    return subprocess.Popen(
        [*args, "--port", str(port)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )


def sender_result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"sender failed with exit code {proc.returncode}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


Receiver = Callable[[float, int], int]  # (seconds, port) -> frames received


def measure_cpu(run: Receiver, data: Path, seconds: float) -> dict[str, float]:
    """Start the sender, let ``run`` receive for ``seconds``, return CPU %, frames seen."""
    port = 43_000 + uuid.uuid4().int % 2000
    proc = start_sender(data, seconds + 2.0, port)
    time.sleep(1.5)  # the child builds its traffic before sending
    cpu0, wall0 = time.process_time(), time.monotonic()
    received = run(seconds, port)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sent = sender_result(proc)
    return {
        "cpu_pct": round(100 * cpu / wall, 1),
        "received": received,
        "send_rate": round(sent["sent"] / sent["elapsed_s"]),
    }


def recv_only(filters: list[dict[str, Any]]) -> Receiver:
    def run(seconds: float, port: int) -> int:
        count = 0
        with can.Bus(
            interface="udp_multicast", channel=GROUP, port=port, can_filters=filters
        ) as bus:
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                if bus.recv(0.1) is not None:
                    count += 1
        return count

    return run


def trigger_source(databases: list[Any], rules: RulesFile) -> Receiver:
    def run(seconds: float, port: int) -> int:
        async def main() -> int:
            source = CanTriggerSource(
                RuleEngine.compile(rules, databases),
                unit_id="car-12",
                bus_factory=lambda filters: can.Bus(
                    interface="udp_multicast", channel=GROUP, port=port, can_filters=filters
                ),
                channel="udp_multicast:bench",
            )
            await source.start()
            drained = asyncio.create_task(_drain(source))
            await asyncio.sleep(seconds)
            await source.stop()
            await drained
            return source.engine.counters["frames"]

        return asyncio.run(main())

    return run


async def _drain(source: CanTriggerSource) -> None:
    async for _ in source.events():
        pass


def throughput(frames: list[Frame], db: Any, rules: RulesFile) -> dict[str, float]:
    # Interleaved, so that a change in the machine's speed during the run (a shared VM)
    # affects both sides alike.
    rules_runs, decode_runs = [], []
    for _ in range(5):
        rules_runs.append(rules_pass(frames, [db], rules))
        decode_runs.append(decode_all_pass(frames, db, rules))
    rules_fps, decode_fps = statistics.median(rules_runs), statistics.median(decode_runs)
    return {"rules": rules_fps, "decode_all": decode_fps, "ratio": rules_fps / decode_fps}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0, help="per CPU measurement")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "can")
    parser.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    traffic_s = TRAFFIC_S
    if args.smoke:  # one scenario cycle (10 s of vehicle time), so that the rules fire
        traffic_s, args.seconds = 10.0, 1.0
    if args.send:
        send(args.data, args.seconds, args.port)
        return
    logs.configure("console", "warning")
    db = cantools.database.load_file(str(args.data / PT_DBC))
    rules = ten_rules()
    engine = RuleEngine.compile(rules, [db])
    wanted = set(engine.frame_ids)

    report: dict[str, Any] = {"bench": "can"}
    for mix, prefix in (("ford_bus", ""), ("icsim", "icsim_")):
        frames = as_tuples(traffic(args.data, traffic_s, icsim=mix == "icsim"))
        read = sum((f[0], f[1]) in wanted for f in frames)
        result = throughput(frames, db, rules)
        report[f"{prefix}rules_frames_per_s"] = round(result["rules"])
        report[f"{prefix}decode_all_frames_per_s"] = round(result["decode_all"])
        report[f"{prefix}ratio"] = round(result["ratio"], 1)
        report[f"{prefix}traffic_frames"] = len(frames)
        report[f"{prefix}traffic_rule_frames"] = read
        print(
            f"{mix}: {len(frames):,} frames over {traffic_s:g} s, {read:,} read by the "
            f"{len(rules.rules)} rules. Rule engine {result['rules']:,.0f} frames/s on one "
            f"core; cantools decode-all (floor) {result['decode_all']:,.0f} frames/s; "
            f"{result['ratio']:.1f}x"
        )

    floor = measure_cpu(recv_only(bus_filters(engine)), args.data, args.seconds)
    source = measure_cpu(trigger_source([db], rules), args.data, args.seconds)
    report["cpu_pct_at_2000fps"] = source["cpu_pct"]
    report["recv_only_cpu_pct_at_2000fps"] = floor["cpu_pct"]
    report["send_rate_fps"] = min(source["send_rate"], floor["send_rate"])
    report["rule_frames_received"] = source["received"]
    report["recv_only_frames_received"] = floor["received"]
    print(
        f"ford_bus at {report['send_rate_fps']:,} frames/s over udp_multicast: trigger source "
        f"{source['cpu_pct']}% CPU ({source['received']:,} rule frames in "
        f"{args.seconds:g} s); bare recv loop (floor) {floor['cpu_pct']}% "
        f"({floor['received']:,})"
    )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
