"""CAN rules and the engine, on the real Ford DBC and real captures from ../shared."""

from __future__ import annotations

import random
from pathlib import Path

import can
import cantools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.decide.admission import Accepted, Admitter, Suppressed
from mesh.decide.policy import Policy
from mesh.protocol.models import TriggerKind
from triggers.can.engine import Fired, RuleEngine, RuleHealth
from triggers.can.factory import build_engine
from triggers.can.replay import replay
from triggers.can.rules import (
    RuleConfig,
    RulesError,
    RulesFile,
    compile_rules,
    load_rules,
    signal_extractor,
)
from triggers.can.simulator import (
    BackgroundTraffic,
    MessagePlan,
    Ramp,
    Scenario,
    Step,
    VehicleSimulator,
    write_log,
)
from triggers.can.source import trigger_event

REPO = Path(__file__).resolve().parents[2]
FORD_RULES = REPO / "configs" / "can" / "ford-police-interceptor.yaml"
PT = "ford_cgea1_2_ptcan_2011.dbc"
T0 = 1_700_000_000.0  # when the simulated captures start (log time)


def ford(can_data: Path) -> cantools.database.Database:
    return cantools.database.load_file(str(can_data / PT))


def drive(
    can_data: Path,
    tmp_path: Path,
    steps: list[Step],
    *,
    duration: float = 12.0,
    background: bool = True,
    name: str = "drive.log",
) -> Path:
    """A capture: the four police-platform messages following ``steps``, mixed with the
    real ICSim background traffic."""
    scenario = Scenario(
        duration_s=duration,
        messages={
            "StrgWheel_PolicePkg": MessagePlan(cycle_ms=100),
            "EngVehicleSpThrottle_CG1": MessagePlan(cycle_ms=20, signals={"Veh_V_ActlEng": 60}),
            "BodyInformation_2": MessagePlan(cycle_ms=100),
            "VehEmergencyData1": MessagePlan(cycle_ms=100),
            "TransGearData": MessagePlan(cycle_ms=100),  # starts at 0: in park
        },
        steps=steps,
        background=BackgroundTraffic(log=str(can_data / "icsim_background.log"))
        if background
        else None,
    )
    path = tmp_path / name
    write_log(VehicleSimulator(scenario, [ford(can_data)]).frames(), path, start_time=T0)
    return path


def fired(path: Path, engine: RuleEngine) -> list[Fired]:
    return [x for x in replay(path, engine) if isinstance(x, Fired)]


def ford_engine(can_data: Path) -> RuleEngine:
    return build_engine(FORD_RULES, [can_data / PT])


def test_background_alone_fires_nothing(can_data: Path) -> None:
    engine = ford_engine(can_data)
    assert fired(can_data / "icsim_background.log", engine) == []
    assert engine.counters["frames"] == 6158
    # ICSim reuses id 0x428 with 7 bytes: shorter than the DBC's 8, counted and skipped.
    assert engine.counters["malformed.short_frame"] == 11


def test_each_light_bar_switch_on_fires_once_at_its_frame(can_data: Path, tmp_path: Path) -> None:
    log = drive(
        can_data,
        tmp_path,
        [
            Step(at=1.0, set={"PoliceAux1Lamp_B_Rq": 1}),
            Step(at=3.0, set={"PoliceAux1Lamp_B_Rq": 0}),
            Step(at=5.0, set={"PoliceAux1Lamp_B_Rq": 1}),
        ],
    )
    lights = [f for f in fired(log, ford_engine(can_data)) if f.rule == "lightbar"]
    assert [f.kind for f in lights] == [TriggerKind.EMERGENCY_LIGHTS] * 2
    assert [round(f.t - T0, 3) for f in lights] == [1.0, 5.0]


def test_speed_fires_above_130_and_rearms_only_below_120(can_data: Path, tmp_path: Path) -> None:
    log = drive(
        can_data,
        tmp_path,
        [
            Step(at=0.5, set={"Veh_V_ActlEng": 135}),  # over 130: fires after the 1 s hold
            Step(at=3.0, set={"Veh_V_ActlEng": 125}),  # dips, but not below 120: stays fired
            Step(at=4.0, set={"Veh_V_ActlEng": 136}),  # over again: no second trigger
            Step(at=6.0, set={"Veh_V_ActlEng": 110}),  # below 120: re-armed
            Step(at=8.0, set={"Veh_V_ActlEng": 140}),  # over again: fires again
        ],
    )
    speed = [
        round(f.t - T0, 2) for f in fired(log, ford_engine(can_data)) if f.rule == "speed-over-130"
    ]
    assert speed == [1.5, 9.0]  # each 1 s after going over (hold_ms: 1000)


def test_hold_filters_blips_and_release_ignores_dips(can_data: Path, tmp_path: Path) -> None:
    rules = RulesFile(
        rules=[
            RuleConfig(
                name="lamp",
                kind=TriggerKind.EMERGENCY_LIGHTS,
                message="StrgWheel_PolicePkg",
                signal="PoliceAux1Lamp_B_Rq",
                value=1,
                hold_ms=250,
                release_ms=500,
            )
        ]
    )
    engine = RuleEngine(compile_rules(rules, [ford(can_data)]))
    log = drive(
        can_data,
        tmp_path,
        [
            Step(at=1.0, set={"PoliceAux1Lamp_B_Rq": 1}),  # a 0.2 s blip: shorter than the hold
            Step(at=1.2, set={"PoliceAux1Lamp_B_Rq": 0}),
            Step(at=2.0, set={"PoliceAux1Lamp_B_Rq": 1}),  # on: fires at 2.25 (hold)
            Step(at=3.0, set={"PoliceAux1Lamp_B_Rq": 0}),  # a 0.3 s dip: shorter than release
            Step(at=3.3, set={"PoliceAux1Lamp_B_Rq": 1}),
            Step(at=5.0, set={"PoliceAux1Lamp_B_Rq": 0}),  # off for real …
            Step(at=6.0, set={"PoliceAux1Lamp_B_Rq": 1}),  # … and on again: fires at 6.25
        ],
        background=False,
    )
    assert [round(f.t - T0, 2) for f in fired(log, engine)] == [2.3, 6.3]


def test_signal_loss_is_a_health_event_never_a_trigger(can_data: Path, tmp_path: Path) -> None:
    scenario = Scenario(
        duration_s=3.0,
        messages={
            "StrgWheel_PolicePkg": MessagePlan(cycle_ms=100),
            "EngVehicleSpThrottle_CG1": MessagePlan(cycle_ms=20),
        },
        steps=[Step(at=0.5, set={"PoliceAux1Lamp_B_Rq": 1})],  # on, and stays on
    )
    frames = list(VehicleSimulator(scenario, [ford(can_data)]).frames())
    # The light-bar message goes silent between 1 s and 2.5 s; the rest keeps coming.
    kept = [(t, m) for t, m in frames if not (m.arbitration_id == 0x428 and 1.0 <= t < 2.5)]
    path = tmp_path / "loss.log"
    write_log(iter(kept), path, start_time=T0)
    events = list(replay(path, ford_engine(can_data)))
    health = [e for e in events if isinstance(e, RuleHealth) and e.rule == "lightbar"]
    assert [h.event for h in health] == ["signal_lost", "signal_restored"]
    # 5 cycles of 100 ms after the last frame at 0.9 s, checked every 0.1 s of log time
    assert 1.4 <= health[0].t - T0 <= 1.5
    assert "StrgWheel_PolicePkg.PoliceAux1Lamp_B_Rq not seen for" in health[0].detail
    assert round(health[1].t - T0, 1) == 2.5
    # The light bar fired when it went on; neither its loss nor its return fires again.
    assert [(e.rule, round(e.t - T0, 3)) for e in events if isinstance(e, Fired)] == [
        ("lightbar", 0.5)
    ]


def test_replay_is_deterministic(can_data: Path, tmp_path: Path) -> None:
    log = drive(
        can_data,
        tmp_path,
        [
            Step(at=1.0, set={"PoliceAux1Lamp_B_Rq": 1}),
            Step(at=2.0, ramp={"Veh_V_ActlEng": Ramp(to=150, over=3)}),
        ],
    )
    first = list(replay(log, ford_engine(can_data)))
    second = list(replay(log, ford_engine(can_data)))
    assert first == second
    assert [f.rule for f in first if isinstance(f, Fired)] == ["lightbar", "speed-over-130"]


def test_crash_rules_share_a_group(can_data: Path, tmp_path: Path) -> None:
    log = drive(
        can_data, tmp_path, [Step(at=1.0, set={"eCallNotification": 2, "VedsDrvBag_D_Ltchd": 1})]
    )
    crash = [f for f in fired(log, ford_engine(can_data)) if f.kind is TriggerKind.CRASH]
    assert {f.rule for f in crash} == {"crash-ecall", "crash-driver-airbag"}
    # One trigger source between them, so the policy makes one activation of the two.
    admitter = Admitter(Policy())
    events = [trigger_event(f, "car-12", "virtual:t") for f in crash]
    assert {e.source.id for e in events} == {"can:crash"}
    outcomes = [admitter.admit(e, e.observed_at_ns) for e in events]
    assert [type(o) for o in outcomes] == [Accepted, Suppressed]


def test_shift_to_park_fires_on_entering_park_not_at_boot(can_data: Path, tmp_path: Path) -> None:
    log = drive(
        can_data,
        tmp_path,
        [
            Step(at=1.0, set={"GearLvrPos_D_Actl": 3}),  # drive
            Step(at=4.0, set={"GearLvrPos_D_Actl": 1}),  # reverse: not park
            Step(at=5.0, set={"GearLvrPos_D_Actl": 0}),  # park
        ],
    )
    park = [f for f in fired(log, ford_engine(can_data)) if f.rule == "shift-to-park"]
    assert [(f.kind, round(f.t - T0, 3)) for f in park] == [(TriggerKind.GEAR, 5.0)]


def test_a_raw_bit_rule_on_a_capture_without_dbc(can_data: Path, tmp_path: Path) -> None:
    # The candidate can-diff finds in the Durango capture (docs/can-rules.md).
    rules = tmp_path / "durango.yaml"
    rules.write_text(
        "rules:\n  - {name: durango-door, kind: door, frame_id: 0x324, byte: 5, "
        "mask: 0x10, value: 0x10}\n"
    )
    engine = build_engine(rules, [can_data / PT])  # the DBC is not used by raw rules
    hits = fired(can_data / "durango_dooropen.log", engine)
    assert len(hits) == 1
    assert round(hits[0].t - 1742338991.450113, 3) == 1.148


def test_malformed_frames_are_counted_and_skipped(can_data: Path) -> None:
    engine = ford_engine(can_data)
    good = (
        ford(can_data)
        .get_message_by_name("StrgWheel_PolicePkg")
        .encode(
            {
                "PoliceAux1Lamp_B_Rq": 1,
                "PoliceAux2Lamp_B_Rq": 0,
                "PoliceAux3Lamp_B_Rq": 0,
                "PoliceAux4Lamp_B_Rq": 0,
            },
            strict=False,
        )
    )
    assert not any(engine.process(0x428, False, good[:3], 1.0))
    assert engine.counters["malformed.short_frame"] == 1
    assert not any(engine.process(0x428, False, b"", 1.1, is_error=True))
    assert not any(engine.process(0x40, False, b"", 1.2, is_error=True))  # bus-off class
    assert (engine.counters["error_frames"], engine.counters["bus_off"]) == (2, 1)
    fired_now, _ = engine.process(0x428, False, good, 1.3)
    assert [f.rule for f in fired_now] == ["lightbar"]  # still working


MUX_DBC = """VERSION ""
NS_ :
BS_:
BU_: A
BO_ 768 Muxed: 8 A
 SG_ Page M : 0|8@1+ (1,0) [0|255] "" A
 SG_ Alarm m1 : 8|1@1+ (1,0) [0|1] "" A
 SG_ Level m2 : 8|8@1+ (1,0) [0|255] "" A
"""


def test_multiplexed_signal_and_unknown_multiplexer(tmp_path: Path) -> None:
    (tmp_path / "mux.dbc").write_text(MUX_DBC)
    db = cantools.database.load_file(str(tmp_path / "mux.dbc"))
    rules = RulesFile(
        rules=[
            RuleConfig(
                name="alarm", kind=TriggerKind.MANUAL, message="Muxed", signal="Alarm", value=1
            )
        ]
    )
    engine = RuleEngine(compile_rules(rules, [db]))
    assert engine.process(0x300, False, bytes([2, 1, 0, 0, 0, 0, 0, 0]), 1.0)[0] == []  # page 2
    assert engine.process(0x300, False, bytes([9, 1, 0, 0, 0, 0, 0, 0]), 1.1)[0] == []  # unknown
    assert engine.counters["malformed.unknown_multiplexer"] == 1
    assert [
        f.rule for f in engine.process(0x300, False, bytes([1, 1, 0, 0, 0, 0, 0, 0]), 1.2)[0]
    ] == ["alarm"]


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (
            "rules: [{name: a, kind: door, message: BodyInformation_2}]",
            "rule 'a'",
            "both message and signal",
        ),
        (
            "rules: [{name: a, kind: door, message: Nope, signal: X, value: 1}]",
            "rule 'a'",
            "in none of the DBC files",
        ),
        (
            "rules: [{name: a, kind: door, message: BodyInformation_2, signal: Nope, value: 1}]",
            "rule 'a'",
            "has no signal 'Nope'",
        ),
        ("rules: [{name: a, kind: warp, frame_id: 1, byte: 0, bit: 1}]", "rule 'a'.kind", ""),
        (
            "rules: [{name: a, kind: door, frame_id: 1, byte: 0}]",
            "rule 'a'",
            "either bit, or mask and value",
        ),
        (
            "rules: [{name: a, kind: door, frame_id: 1, byte: 0, bit: 1, value: 0}]",
            "rule 'a'",
            "a bit rule fires when the bit is 1",
        ),
        (
            "rules: [{name: a, kind: door, message: M, signal: S, value: 1, hysteresis: 3}]",
            "rule 'a'",
            "hysteresis applies to > >= < <= only",
        ),
        (
            "rules: [{name: a, kind: door, frame_id: 1, byte: 0, bit: 1, colour: red}]",
            "rule 'a'.colour",
            "unknown key",
        ),
        (
            "rules: [{name: a, kind: door, frame_id: 1, byte: 0, bit: 1},"
            " {name: a, kind: door, frame_id: 2, byte: 0, bit: 1}]",
            "",
            "duplicate rule names",
        ),
    ],
)
def test_bad_rules_name_the_rule_and_the_problem(
    can_data: Path, tmp_path: Path, text: str, where: str, problem: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        build_engine(path, [can_data / PT])
    assert info.value.where == where
    assert problem in info.value.problem


def test_shipped_rules_compile_against_the_demo_dbc_too() -> None:
    demo = cantools.database.load_file(str(REPO / "mesh" / "sim" / "data" / "demo-vehicle.dbc"))
    assert len(compile_rules(load_rules(FORD_RULES), [demo])) == 7


def test_the_demo_dbc_lays_out_its_signals_as_the_ford_dbc(can_data: Path) -> None:
    demo = cantools.database.load_file(str(REPO / "mesh" / "sim" / "data" / "demo-vehicle.dbc"))
    full = ford(can_data)
    for message in demo.messages:
        theirs = full.get_message_by_frame_id(message.frame_id)
        assert (theirs.name, theirs.length) == (message.name, message.length)
        for signal in message.signals:
            other = theirs.get_signal_by_name(signal.name)
            layout = ("start", "length", "byte_order", "is_signed", "scale", "offset")
            assert [getattr(signal, a) for a in layout] == [getattr(other, a) for a in layout]


# What the Ford files lack: IEEE float signals (both byte orders, 32 and 64 bits), signed
# big-endian fields that cross bytes, and a multiplexed message.
ODD_DBC = """VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 Floats: 8 ECU
 SG_ F32le : 0|32@1- (1,0) [0|0] "" ECU
 SG_ F32be : 39|32@0- (2,-1) [0|0] "" ECU
BO_ 257 Double: 8 ECU
 SG_ F64 : 7|64@0- (1,0) [0|0] "" ECU
BO_ 258 Signed: 8 ECU
 SG_ S13be : 5|13@0- (0.5,10) [0|0] "" ECU
 SG_ S11le : 20|11@1- (1,0) [0|0] "" ECU
 SG_ U1 : 63|1@0+ (1,0) [0|0] "" ECU
BO_ 259 Muxed: 8 ECU
 SG_ Page M : 0|8@1+ (1,0) [0|0] "" ECU
 SG_ A m1 : 8|16@1+ (0.1,0) [0|0] "" ECU
 SG_ B m2 : 15|12@0- (1,0) [0|0] "" ECU
SIG_VALTYPE_ 256 F32le : 1;
SIG_VALTYPE_ 256 F32be : 1;
SIG_VALTYPE_ 257 F64 : 2;
"""


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # read-only data
)
@given(st.integers(0, 2**64 - 1))
def test_one_signal_extraction_equals_cantools_on_every_signal(can_data: Path, seed: int) -> None:
    """The engine's own bit extraction agrees with a full cantools decode, for every signal
    of every message of both Ford DBCs and of ODD_DBC, on random frames."""
    rng = random.Random(seed)
    databases = [_databases(can_data / "ford_cgea1_2_ptcan_2011.dbc")]
    databases.append(_databases(can_data / "ford_cgea1_2_bodycan_2011.dbc"))
    databases.append(cantools.database.load_string(ODD_DBC, "dbc"))
    checked = 0
    for db in databases:
        for message in db.messages:
            data = bytearray(rng.randbytes(message.length))
            if message.is_multiplexed():
                data[0] = rng.choice([1, 2])
            decoded = message.decode(bytes(data), decode_choices=False, allow_truncated=True)
            for signal in message.signals:
                if signal.name not in decoded:
                    continue  # not on this multiplexer page
                mine = signal_extractor(signal, message.length)(bytes(data))
                theirs = decoded[signal.name]
                if isinstance(theirs, float) and theirs != theirs:  # NaN bit patterns
                    assert mine != mine, (message.name, signal.name)
                else:
                    assert mine == pytest.approx(theirs), (message.name, signal.name)
                checked += 1
    assert checked > 1000


_CACHE: dict[Path, cantools.database.Database] = {}


def _databases(path: Path) -> cantools.database.Database:
    if path not in _CACHE:
        _CACHE[path] = cantools.database.load_file(str(path))
    return _CACHE[path]


def test_log_reader_formats(can_data: Path, tmp_path: Path) -> None:
    """The same drive as candump .log and as Vector .asc replays to the same triggers at
    the same log times (.asc keeps its start time to the millisecond)."""
    steps = [Step(at=1.0, set={"PoliceAux1Lamp_B_Rq": 1})]
    as_log = drive(can_data, tmp_path, steps, background=False, duration=3)
    as_asc = tmp_path / "drive.asc"
    frames = list(can.LogReader(str(as_log)))
    with can.Logger(str(as_asc)) as logger:
        for msg in frames:
            logger(msg)
    a = [(f.rule, round(f.t - T0, 3)) for f in fired(as_log, ford_engine(can_data))]
    b = [(f.rule, round(f.t - T0, 3)) for f in fired(as_asc, ford_engine(can_data))]
    assert a == [("lightbar", 1.0)]
    assert [r for r, _ in b] == ["lightbar"]
    assert abs(b[0][1] - a[0][1]) <= 0.001


def test_values_by_dbc_name(tmp_path: Path) -> None:
    """The demo DBC names GearLvrPos_D_Actl's values: rules may use the names."""
    demo = REPO / "mesh" / "sim" / "data" / "demo-vehicle.dbc"
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: moving, kind: gear, message: TransGearData,"
        " signal: GearLvrPos_D_Actl, op: in, value: [Drive, Reverse]}\n"
    )
    engine = build_engine(path, [demo])
    message = cantools.database.load_file(str(demo)).get_message_by_name("TransGearData")
    gears = [("Park", 0.0), ("Neutral", 1.0), ("Reverse", 2.0), ("Drive", 3.0)]
    fired_at = [
        t
        for name, t in gears
        for f in engine.process(0x230, False, message.encode({"GearLvrPos_D_Actl": name}), t)[0]
    ]
    assert fired_at == [2.0]  # Reverse fires; Drive right after is the same "moving" state
    path.write_text(
        "rules:\n  - {name: x, kind: gear, message: TransGearData,"
        " signal: GearLvrPos_D_Actl, value: Sideways}\n"
    )
    with pytest.raises(RulesError) as info:
        build_engine(path, [demo])
    assert "no value named 'Sideways' (choices: Park, Reverse, Neutral" in info.value.problem


def _encode(can_data: Path, message_name: str, **values: float) -> bytes:
    """A frame of a Ford message: the given signals, every other one raw 0."""
    message = ford(can_data).get_message_by_name(message_name)
    return bytes(message.encode({s.name: s.offset for s in message.signals} | values))


def _gear(can_data: Path, value: int) -> bytes:
    return _encode(can_data, "TransGearData", GearLvrPos_D_Actl=value)


def test_park_ignores_unknown_and_fault(can_data: Path) -> None:
    engine = ford_engine(can_data)

    def shift(value: int, t: float) -> list[str]:
        return [f.rule for f in engine.process(0x230, False, _gear(can_data, value), t)[0]]

    # Boot: the lever reads Unknown (14), then Park: nothing has been shifted.
    assert shift(14, 0.0) + shift(0, 0.1) == []
    # Drive, a Fault reading, then Park: the shift into park fires, once.
    assert shift(3, 1.0) + shift(15, 1.1) == []
    assert shift(0, 1.2) == ["shift-to-park"]
    assert shift(0, 1.3) == []


def test_remote_frames_carry_no_data(can_data: Path) -> None:
    engine = ford_engine(can_data)
    assert not any(engine.process(0x230, False, _gear(can_data, 3), 0.0))  # in drive
    # A remote request for 0x230 arrives as 8 zero bytes on socketcan: not "in park".
    assert not any(engine.process(0x230, False, bytes(8), 0.1, is_remote=True))
    assert engine.counters["remote_frames"] == 1
    assert [f.rule for f in engine.process(0x230, False, _gear(can_data, 0), 0.2)[0]] == [
        "shift-to-park"
    ]


def test_silence_from_the_start_is_reported(can_data: Path) -> None:
    """A dead or miswired bus: no rule's frame ever comes. The Ford DBC has no cycle
    times, so each rule waits silence_s (5 s); a rule with cycle_ms waits 5 cycles."""
    rules = load_rules(FORD_RULES)
    timed = rules.rules[0].model_copy(update={"name": "timed", "cycle_ms": 100})
    engine = RuleEngine.compile(
        rules.model_copy(update={"rules": [*rules.rules, timed]}), [ford(can_data)]
    )
    engine.start(100.0)
    assert [h.rule for h in engine.tick(100.4)] == []
    assert [h.rule for h in engine.tick(100.6)] == ["timed"]
    lost = engine.tick(105.1)
    assert len(lost) == 7
    assert "never seen in 5.1 s (period not known yet)" in lost[0].detail
    assert engine.lost_rules() == sorted([*(r.name for r in rules.rules), "timed"])


def test_malformed_frames_are_not_the_signal(can_data: Path) -> None:
    """ICSim's 7-byte 0x428 frames are not the Ford light-bar message: they neither
    keep the signal alive nor teach its period."""
    engine = ford_engine(can_data)
    engine.start(0.0)
    for k in range(60):
        engine.process(0x428, False, bytes(7), k * 0.1)
    assert "lightbar" in [h.rule for h in engine.tick(6.0)]
    assert engine.counters["malformed.short_frame"] == 60


def test_a_signal_seen_too_briefly_to_learn_its_period_is_still_missed(can_data: Path) -> None:
    engine = ford_engine(can_data)
    for k in range(3):  # three frames, then nothing: no period learned
        engine.process(0x428, False, bytes(8), k * 0.1)
    assert "lightbar" not in [h.rule for h in engine.tick(5.1)]  # 4.9 s since the last
    lost = [h for h in engine.tick(5.3) if h.rule == "lightbar"]
    assert [h.detail for h in lost] == [
        "StrgWheel_PolicePkg.PoliceAux1Lamp_B_Rq not seen for 5.1 s (period not known yet)"
    ]


def test_a_hold_does_not_span_a_gap(can_data: Path) -> None:
    fast = _encode(can_data, "EngVehicleSpThrottle_CG1", Veh_V_ActlEng=135)
    engine = ford_engine(can_data)
    times = [0.02 * k for k in range(10)]  # 135 kph for 0.2 s, learns the 20 ms period
    times += [5.0 + 0.02 * k for k in range(60)]  # then silence, then 135 kph for 1.2 s
    fired_at = [round(t, 2) for t in times for f in engine.process(0x201, False, fast, t)[0]]
    assert fired_at == [6.0]  # 1 s after the frames resumed, not at 5.0


def test_a_masked_rule_with_in(can_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules: [{name: m, kind: siren, frame_id: 0x3C1, byte: 2, mask: 0x0C,"
        " op: in, value: [0x04, 0x08]}]\n"
    )
    engine = build_engine(path, [can_data / PT])
    hits = [
        b
        for b in (0x00, 0x04, 0x00, 0x0C, 0x08)
        for _ in engine.process(0x3C1, False, bytes([0, 0, b]), 0.0)[0]
    ]
    assert hits == [0x04, 0x08]  # 0x0C is neither; 0x08 comes after a release (0x0C)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "rules: [{name: a, kind: door, message: BodyInformation_2,"
            " signal: DrStatDrv_B_Actl, value: 1, byte: 3}]",
            "byte: raw-bit keys, which do not apply to a DBC rule",
        ),
        (
            "rules: [{name: a, kind: door, frame_id: 0x18FF0000, byte: 0, bit: 1}]",
            "frame_id 0x18FF0000 does not fit 11 bits: set extended: true",
        ),
        (
            "rules: [{name: a, kind: door, frame_id: 0x100, byte: 0, mask: 0x10, value: 0x20}]",
            "value 0x20 has bits outside mask 0x10",
        ),
        (
            "rules: [{name: a, kind: crash, group: g, frame_id: 1, byte: 0, bit: 1},"
            " {name: b, kind: door, group: g, frame_id: 2, byte: 0, bit: 1}]",
            "group 'g' mixes kinds ['crash', 'door']",
        ),
    ],
)
def test_rules_that_could_never_work_as_written_are_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert problem in str(info.value)
