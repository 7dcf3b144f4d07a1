"""The CAN rule engine, the rules file and the capture reader under arbitrary input
(docs/fuzzing.md), on the real Ford DBC and the real captures in ../shared/data/can.

- Any frame (standard or extended id, 0-64 bytes, error and remote frames) goes through
  the engine without raising, and a trigger only ever comes from a frame a rule reads,
  with a value the rule fires on.
- A rules file changed in one place loads, or is refused with a RulesError naming the file
  and the rule; any text at all is a RulesError.
- A capture with garbage lines replays up to the first line python-can cannot read and
  stops with a CaptureError naming that line; a damaged real capture does the same.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import cantools
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_helpers import budget, json_values
from triggers.can.engine import Fired, RuleEngine, RuleHealth
from triggers.can.replay import CaptureError, read_capture, replay
from triggers.can.rules import CompiledRule, RulesError, compile_rules, load_rules

REPO = Path(__file__).resolve().parents[2]
FORD_RULES = REPO / "configs" / "can" / "ford-police-interceptor.yaml"
PT = "ford_cgea1_2_ptcan_2011.dbc"
# Raw-bit rules on ids the Ford DBC does not use, standard and extended.
RAW_RULES = """
rules:
  - {name: door-bit, kind: door, frame_id: 0x324, byte: 5, bit: 2}
  - {name: masked, kind: crash, frame_id: 0x18FF0010, extended: true, byte: 3, mask: 0xF0,
     op: in, value: [0x10, 0x30]}
  - {name: falling, kind: gear, frame_id: 0x7FF, byte: 0, mask: 0x03, op: "==", value: 0,
     edge: falling, ignore: [3]}
  - {name: held, kind: siren, frame_id: 0x100, byte: 7, mask: 0xFF, op: ">", value: 200,
     hysteresis: 20, hold_ms: 50}
"""


class Frame(NamedTuple):
    frame_id: int
    extended: bool
    data: bytes
    dt: float  # seconds after the previous frame
    error: bool
    remote: bool


@pytest.fixture(scope="module")
def engines(can_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[CompiledRule]]:
    """Compiled rules (immutable, shared): the shipped Ford rules and the raw-bit ones."""
    raw = tmp_path_factory.mktemp("rules") / "raw.yaml"
    raw.write_text(RAW_RULES)
    database = cantools.database.load_file(str(can_data / PT))
    return [
        compile_rules(load_rules(FORD_RULES), [database]),
        compile_rules(load_rules(raw), []),
    ]


def frames(watched: list[tuple[int, bool]]) -> st.SearchStrategy[list[Frame]]:
    ids = st.one_of(
        st.sampled_from(watched),
        st.tuples(st.integers(0, 0x7FF), st.just(False)),
        st.tuples(st.integers(0, 0x1FFFFFFF), st.just(True)),
        st.tuples(st.integers(0, 0x1FFFFFFF), st.booleans()),  # ids a bus would not carry
    )
    frame = st.builds(
        lambda key, data, dt, error, remote: Frame(key[0], key[1], data, dt, error, remote),
        ids,
        st.binary(max_size=64),
        st.floats(0, 2.0),
        st.integers(0, 30).map(lambda n: n == 0),  # now and then an error frame …
        st.integers(0, 30).map(lambda n: n == 0),  # … or a remote one
    )
    return st.lists(frame, min_size=1, max_size=60)


def run(rules: list[CompiledRule], stream: list[Frame]) -> list[tuple[Any, ...]]:
    """Everything the engine says for the stream, checked frame by frame."""
    engine = RuleEngine(rules, signal_loss_cycles=3, silence_s=1.0)
    by_name = {rule.name: rule for rule in rules}
    watched = set(engine.frame_ids)
    out: list[tuple[Any, ...]] = []
    t = 1_700_000_000.0
    for frame in stream:
        t += frame.dt
        fired, health = engine.process(
            frame.frame_id,
            frame.extended,
            frame.data,
            t,
            is_error=frame.error,
            is_remote=frame.remote,
        )
        if frame.error or frame.remote or (frame.frame_id, frame.extended) not in watched:
            assert (list(fired), list(health)) == ([], []), frame
        for f in fired:
            rule = by_name[f.rule]
            assert (rule.frame_id, rule.extended) == (frame.frame_id, frame.extended)
            assert f.frame_id == frame.frame_id
            assert rule.fires(f.value), (f, frame)
            assert f.value not in rule.ignore
        ticked = engine.tick(t)
        assert all(isinstance(h, RuleHealth) and h.rule in by_name for h in [*health, *ticked])
        out += [("fired", f) for f in fired] + [("health", h) for h in [*health, *ticked]]
    assert engine.counters["frames"] == len(stream)
    assert engine.counters["fired"] == sum(1 for o in out if o[0] == "fired")
    return out


@budget(70)
@given(st.data())
def test_any_frame_is_safe_and_only_a_watched_frame_fires(
    engines: list[list[CompiledRule]], data: st.DataObject
) -> None:
    rules = data.draw(st.sampled_from(engines))
    watched = sorted({(r.frame_id, r.extended) for r in rules})
    stream = data.draw(frames(watched))
    # The same frames twice: the same answer (time is the frames', never the clock's).
    assert run(rules, stream) == run(rules, stream)


# --- the rules file ------------------------------------------------------------------------------
RULE_KEYS = sorted(
    {"name", "kind", "group", "message", "signal", "frame_id", "extended", "byte", "mask"}
    | {"bit", "op", "value", "hysteresis", "edge", "hold_ms", "release_ms", "ignore", "cycle_ms"}
)


@st.composite
def changed_rules(draw: st.DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], int, str, str]:
    """The shipped rules with one rule changed at one key: (document, rule index, key, op)."""
    document = copy.deepcopy(base)
    i = draw(st.integers(0, len(document["rules"]) - 1))
    rule = document["rules"][i]
    op = draw(st.sampled_from(["drop", "set", "unknown"]))
    key = draw(st.sampled_from(sorted(rule) if op == "drop" else RULE_KEYS))
    if op == "drop":
        del rule[key]
    elif op == "unknown":
        # Letters and digits: YAML folds line breaks (even NEL) inside a key.
        letters = st.characters(categories=("L", "N", "Pc", "Pd"))
        key = draw(st.text(letters, min_size=1, max_size=10).filter(lambda k: k not in RULE_KEYS))
        rule[key] = draw(json_values)
    else:
        rule[key] = draw(
            st.one_of(
                json_values,
                st.integers(-(2**40), 2**40),
                st.sampled_from(["==", "in", ">", "falling", "crash", "door", "0x1FFFFFFF"]),
                st.text(min_size=1000, max_size=2000),
            )
        )
    return document, i, key, op


@budget(25)
@given(st.data())
def test_a_rules_file_changed_in_one_place_loads_or_names_the_rule(
    can_data: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    base = yaml.safe_load(FORD_RULES.read_text())
    document, i, key, op = data.draw(changed_rules(base))
    path = tmp_path_factory.getbasetemp() / "fuzz-rules.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    names = {repr(base["rules"][i]["name"]), str(i)}
    if key == "name" and isinstance(document["rules"][i].get("name"), str):
        names.add(repr(document["rules"][i]["name"]))
    try:
        rules = load_rules(path)
        compile_rules(rules, [_ford(can_data)], str(path))
    except RulesError as exc:
        refused = exc
    else:
        return  # still a working rules file (a timing changed, say)
    assert str(path) in str(refused)
    if op == "unknown":
        assert refused.where == f"rule {base['rules'][i]['name']!r}.{key}"
        assert refused.problem == "unknown key"
    elif refused.where:
        assert any(refused.where.startswith(f"rule {name}") for name in names), refused
    else:  # a change that breaks the file as a whole
        assert "duplicate rule names" in refused.problem or "mixes kinds" in refused.problem


_FORD: dict[Path, Any] = {}


def _ford(can_data: Path) -> Any:
    if can_data not in _FORD:
        _FORD[can_data] = cantools.database.load_file(str(can_data / PT))
    return _FORD[can_data]


@budget(105)
@given(st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=200)))
def test_any_text_as_a_rules_file_is_a_rules_error(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "any-rules.yaml"
    path.write_bytes(content)
    try:
        load_rules(path)
    except RulesError as exc:
        assert str(path) in str(exc)  # noqa: PT017 (a rules file is rarely what comes out)
    else:
        assert "rules" in yaml.safe_load(content)


# --- captures ------------------------------------------------------------------------------------
def candump(frame: Frame, t: float) -> str:
    """One line of `candump -L`."""
    ident = f"{frame.frame_id:08X}" if frame.extended else f"{frame.frame_id:03X}"
    body = "R" if frame.remote else frame.data.hex().upper()
    return f"({t:.6f}) can0 {ident}#{body}"


def _key(message: Any) -> tuple[Any, ...]:
    return (
        round(message.timestamp, 6),
        message.arbitration_id,
        message.is_extended_id,
        message.is_remote_frame,
        bytes(message.data) if not message.is_remote_frame else b"",
    )


GARBAGE = st.one_of(
    st.text(max_size=40).map(lambda s: s.replace("\n", " ").replace("\r", " ")),
    st.sampled_from(["(1.0) can0 0##", "(1.0) can0 123", "(x) can0 1#00", "(nan) can0 1#00"]),
    st.sampled_from(["(inf) can0 1#00", "can0 123#00", "(1.0) can0 123#0G", "\x00"]),
)


@budget(105)
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda f: ("frame", f),
                st.builds(
                    Frame,
                    st.integers(0, 0x7FF),
                    st.just(False),
                    st.binary(max_size=8),
                    st.just(0.0),
                    st.just(False),
                    st.booleans(),
                )
                | st.builds(
                    Frame,
                    st.integers(0x800, 0x1FFFFFFF),
                    st.just(True),
                    st.binary(max_size=64),
                    st.just(0.0),
                    st.just(False),
                    st.just(False),
                ),
            ),
            st.builds(lambda g: ("garbage", g), GARBAGE),
        ),
        max_size=20,
    )
)
def test_a_capture_reads_up_to_its_first_bad_line_and_names_it(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[str, Any]]
) -> None:
    path = tmp_path_factory.getbasetemp() / "capture.log"
    text, expected = [], []
    for n, (what, item) in enumerate(lines):
        t = 1_700_000_000.0 + n / 100
        text.append(candump(item, t) if what == "frame" else item)
        if what == "frame":
            expected.append(
                (
                    n + 1,
                    (
                        round(t, 6),
                        item.frame_id,
                        item.extended,
                        item.remote,
                        b"" if item.remote else item.data,
                    ),
                )
            )
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    read: list[tuple[Any, ...]] = []
    error: CaptureError | None = None
    try:
        read.extend(_key(m) for m in read_capture(path))
    except CaptureError as exc:
        error = exc
    last = len(lines)
    if error is not None:
        assert error.path == str(path)
        assert error.where.startswith("line "), error
        last = int(error.where.removeprefix("line "))
        assert lines[last - 1][0] == "garbage", (error, lines[last - 1])
    # Every good line before the one refused was read, in order (garbage python-can
    # happens to accept adds frames between them).
    wanted = iter(read)
    assert all(any(key == got for got in wanted) for line, key in expected if line < last)


@budget(70)
@given(st.data())
def test_a_damaged_real_capture_replays_or_names_the_line(
    can_data: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    original = _capture_head(can_data)
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        how = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if how == "flip":
            damaged[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "insert":
            damaged[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del damaged[at : at + data.draw(st.integers(1, 8))]
        else:
            del damaged[at:]
            break
    path = tmp_path_factory.getbasetemp() / "damaged.log"
    path.write_bytes(bytes(damaged))
    engine = RuleEngine(_ford_rules(can_data))
    try:
        events = list(replay(path, engine))
    except CaptureError as exc:
        line = int(exc.where.removeprefix("line "))
        assert 1 <= line <= damaged.count(b"\n") + 1
        return
    assert all(isinstance(e, Fired | RuleHealth) for e in events)


_CACHE: dict[str, Any] = {}


def _capture_head(can_data: Path) -> bytes:
    if "head" not in _CACHE:
        lines = (can_data / "icsim_background.log").read_bytes().splitlines(keepends=True)
        _CACHE["head"] = b"".join(lines[:150])
    return _CACHE["head"]  # type: ignore[no-any-return]


def _ford_rules(can_data: Path) -> list[CompiledRule]:
    if "rules" not in _CACHE:
        _CACHE["rules"] = compile_rules(load_rules(FORD_RULES), [_ford(can_data)])
    return _CACHE["rules"]  # type: ignore[no-any-return]


@budget(40)
@given(
    st.lists(
        st.tuples(st.integers(0, 0x1FFFFFFF), st.booleans(), st.binary(max_size=8), st.booleans()),
        max_size=20,
    )
)
def test_frames_written_by_python_can_read_back_the_same(
    tmp_path_factory: pytest.TempPathFactory, frames_: list[tuple[int, bool, bytes, bool]]
) -> None:
    import can

    path = tmp_path_factory.getbasetemp() / "written.log"
    messages = [
        can.Message(
            timestamp=1_700_000_000 + i / 1000,
            arbitration_id=ident if extended else ident & 0x7FF,
            is_extended_id=extended,
            is_remote_frame=remote,
            data=None if remote else data,
            dlc=len(data),
        )
        for i, (ident, extended, data, remote) in enumerate(frames_)
    ]
    with can.Logger(str(path)) as logger:
        for message in messages:
            logger(message)
    # candump writes an 11-bit id as 3 digits: read back, the id is standard again.
    assert [_key(m) for m in read_capture(path)] == [_key(m) for m in messages]


# --- findings, each pinned by an explicit example ---------------------------------------------
@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        (b"(1.0) can0 123#00\n\n(2.0) can0 0##\n", "line 3", "string index out of range"),
        (b"(1.0) can0 123#00\ngarbage\n", "line 2", "not enough values to unpack"),
        (
            b"(1.0) can0 123#00\r\n(nan) can0 1#00\n",
            "line 2",
            "timestamp nan is not a finite number",
        ),
        (b"(inf) can0 1#00\n", "line 1", "timestamp inf is not a finite number"),
        (b"(1.0) can0 123#00\n(2.0) can0 124#\xff\xfe\n", "line 2", "not UTF-8 text"),
    ],
)
def test_a_bad_capture_line_is_named(
    tmp_path: Path, content: bytes, where: str, problem: str
) -> None:
    """Finding: python-can's reader raised IndexError for `0##` (a crash: the CLI catches
    only ValueError and OSError), a bare ValueError naming no line for the rest, and took
    NaN and infinite timestamps, which stopped signal-loss checks for the rest of the log."""
    path = tmp_path / "bad.log"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as info:
        list(read_capture(path))
    assert (info.value.where, info.value.path) == (where, str(path))
    assert problem in str(info.value)


def test_a_capture_of_an_unknown_format_is_a_capture_error(tmp_path: Path) -> None:
    path = tmp_path / "drive.xyz"
    path.write_text("")
    with pytest.raises(CaptureError, match="unknown log format"):
        list(read_capture(path))
    gz = tmp_path / "drive.log.gz"
    gz.write_bytes(b"not gzip")
    with pytest.raises(CaptureError, match="Not a gzipped file"):
        list(read_capture(gz))


def test_a_real_capture_reads_whole(can_data: Path) -> None:
    messages: Iterator[Any] = read_capture(can_data / "icsim_background.log")
    assert sum(1 for _ in messages) == 6158


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        (b"rules:\n  - {name: a\xff}", "byte 19", "not UTF-8 text: invalid start byte"),
        (b"[" * 600 + b"]" * 600, "", "not valid YAML: nested too deeply"),
        (b"rules: [{name: a, kind: door, frame_id: 1, byte: 0, at: 2020-13-01}]", "", "a value"),
        (
            b"rules: [{name: a, kind: door, frame_id: 1, byte: 0, mask: 1, value: {x: 1}}]",
            "rule 'a'.value",
            "expected a number or text or a list, not a mapping",
        ),
    ],
)
def test_a_rules_file_that_cannot_be_read_names_where(
    tmp_path: Path, content: bytes, where: str, problem: str
) -> None:
    """Findings: a rules file that is not UTF-8 raised UnicodeDecodeError, one nested 600
    deep RecursionError, a bad date ValueError; and a value of none of the allowed types
    was named after pydantic's union member (``rule 'a'.value.int``)."""
    path = tmp_path / "rules.yaml"
    path.write_bytes(content)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.where == where
    assert problem in info.value.problem
