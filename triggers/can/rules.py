"""CAN trigger rules (docs/can-rules.md): YAML in, compiled rules out.

Two kinds of rule, with the same timing options:
- signal rules name a DBC message and signal: ``{message, signal, op, value}``;
- raw-bit rules, for vehicles without a DBC: ``{frame_id, extended, byte, mask, value}``
  or ``{frame_id, byte, bit}``.
Compiling checks every name against the DBC files and turns each rule into a fast
extractor of the one value it needs (no full-message decode per frame).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mesh.documents import DocumentError, load_yaml
from mesh.protocol.codec import readable_loc
from mesh.protocol.models import TriggerKind

Op = Literal["==", "!=", ">", ">=", "<", "<=", "in"]
Number = int | float


class RulesError(ValueError):
    def __init__(self, path: Path | str, where: str, problem: str) -> None:
        self.path, self.where, self.problem = str(path), where, problem
        super().__init__(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


class RuleConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    kind: TriggerKind
    # Rules in one group share a trigger source (so one policy cooldown): crash rules on
    # several airbag signals that fire together make one activation.
    group: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    # A DBC signal …
    message: str | None = None
    signal: str | None = None
    # … or raw bits.
    frame_id: Annotated[int, Field(ge=0, le=0x1FFFFFFF)] | None = None
    extended: bool = False
    byte: Annotated[int, Field(ge=0, le=63)] | None = None
    mask: Annotated[int, Field(ge=0, le=0xFF)] | None = None
    bit: Annotated[int, Field(ge=0, le=7)] | None = None
    # The condition.
    op: Op = "=="
    value: Number | str | list[Number | str] | None = None
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    edge: Literal["rising", "falling"] = "rising"
    hold_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    release_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    # Values that carry no information (a DBC's "unknown", "fault", "not available"): the
    # frame counts as present, the value neither fires nor releases the rule.
    ignore: list[Number | str] = Field(default_factory=list)
    # Expected period of the frame, for signal-loss health; default from the DBC, else
    # learned from the traffic.
    cycle_ms: Annotated[float, Field(gt=0, le=600_000)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        by_signal = self.message is not None or self.signal is not None
        if by_signal == (self.frame_id is not None):
            raise ValueError("give either message+signal (DBC) or frame_id+byte (raw bits)")
        if by_signal:
            self._check_signal_rule()
        else:
            self._check_raw_rule()
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("op 'in' needs a list value")
        if self.op != "in" and isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a single value")
        if self.hysteresis and self.op not in (">", ">=", "<", "<="):
            raise ValueError("hysteresis applies to > >= < <= only")
        return self

    def _check_signal_rule(self) -> None:
        if self.message is None or self.signal is None:
            raise ValueError("a DBC rule needs both message and signal")
        raw_keys = [k for k in ("byte", "mask", "bit") if getattr(self, k) is not None]
        if raw_keys or self.extended:
            keys = ", ".join(raw_keys + (["extended"] if self.extended else []))
            raise ValueError(f"{keys}: raw-bit keys, which do not apply to a DBC rule")
        if self.value is None:
            raise ValueError("a DBC rule needs a value")

    def _check_raw_rule(self) -> None:
        assert self.frame_id is not None
        if self.frame_id > 0x7FF and not self.extended:
            raise ValueError(
                f"frame_id 0x{self.frame_id:X} does not fit 11 bits: set extended: true"
            )
        if self.byte is None:
            raise ValueError("a raw-bit rule needs byte")
        if (self.bit is None) == (self.mask is None):
            raise ValueError("a raw-bit rule needs either bit, or mask and value")
        if any(isinstance(v, str) for v in self.ignore):
            raise ValueError("ignore values of a raw-bit rule are integers")
        if self.bit is not None and (self.value is not None or self.op != "=="):
            raise ValueError(
                "a bit rule fires when the bit is 1 (edge: falling for 0): no op or value"
            )
        if self.mask is not None:
            values = self.value if isinstance(self.value, list) else [self.value]
            if not all(isinstance(v, int) for v in values):
                raise ValueError("a raw-bit rule with mask needs integer values")
            outside = [v for v in values if isinstance(v, int) and v & ~self.mask]
            if outside and self.op in ("==", "!=", "in"):
                raise ValueError(
                    f"value 0x{outside[0]:X} has bits outside mask 0x{self.mask:X}: "
                    "data[byte] & mask can never equal it"
                )

    @property
    def source_group(self) -> str:
        return self.group or self.name


class RulesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # How many missed cycles make a signal "lost" (a health event, never a trigger) …
    signal_loss_cycles: Annotated[float, Field(ge=1, le=1000)] = 5.0
    # … and for a frame whose period is not known (yet), how many seconds of silence.
    silence_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    rules: list[RuleConfig]

    @model_validator(mode="after")
    def _groups(self) -> Self:
        # The policy's cooldown is per (unit, kind, source): a group is one source, so its
        # rules must share a kind to share a cooldown.
        kinds: dict[str, set[str]] = {}
        for rule in self.rules:
            kinds.setdefault(rule.source_group, set()).add(rule.kind.value)
        for group, found in kinds.items():
            if len(found) > 1:
                raise ValueError(
                    f"group {group!r} mixes kinds {sorted(found)}: rules of a group share "
                    "one kind (one trigger source, one cooldown)"
                )
        return self


def load_rules(path: Path | str) -> RulesFile:
    path = Path(path)
    try:
        data = load_yaml(path)
    except DocumentError as exc:
        raise RulesError(path, exc.where, exc.summary) from None
    if not isinstance(data, dict):
        raise RulesError(path, "", "expected a mapping with a 'rules' list")
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc, problem = readable_loc(RulesFile, first)
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            raw = data.get("rules") or []
            entry = raw[loc[1]] if loc[1] < len(raw) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or len(name) > 64:
                name = None  # named by its place in the list instead
            where = f"rule {name or loc[1]!r}" + (
                "." + ".".join(map(str, loc[2:])) if loc[2:] else ""
            )
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        raise RulesError(path, where, problem) from None
    names = [r.name for r in rules.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RulesError(path, "", f"duplicate rule names {duplicates}")
    return rules


# --- compiled rules -----------------------------------------------------------------------
Extract = Callable[[bytes], Number]


@dataclass(frozen=True)
class CompiledRule:
    config: RuleConfig
    frame_id: int
    extended: bool
    min_length: int  # a frame shorter than this is malformed for this rule
    extract: Extract
    condition: Callable[[Number], bool]
    released: Callable[[Number], bool]  # with hysteresis, "off" needs more than "not on"
    cycle_s: float | None
    where: str  # message.signal or 0xID[byte]
    # For multiplexed signals: (extract the multiplexer, values the signal exists under,
    # every value the DBC defines).
    mux: tuple[Extract, frozenset[int], frozenset[int]] | None = None
    ignore: frozenset[Number] = frozenset()  # values that neither fire nor release
    # Derived for the engine's per-frame path: which test fires and which re-arms (swapped
    # for a falling edge), and the timings, without going through ``config``.
    fires: Callable[[Number], bool] = field(init=False)
    rearms: Callable[[Number], bool] = field(init=False)
    hold_ms: float = field(init=False)
    release_ms: float = field(init=False)

    def __post_init__(self) -> None:
        rising = self.config.edge == "rising"
        derived = {
            "fires": self.condition if rising else self.released,
            "rearms": self.released if rising else self.condition,
            "hold_ms": self.config.hold_ms,
            "release_ms": self.config.release_ms,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @property
    def name(self) -> str:
        return self.config.name


def signal_extractor(signal: Any, frame_len: int, *, scaled: bool = True) -> Extract:
    """The value of one cantools signal in a frame, computed directly from its start bit,
    length, byte order and sign: no decode of the whole message per frame."""
    start, length = int(signal.start), int(signal.length)
    big_endian, signed = signal.byte_order == "big_endian", signal.is_signed
    is_float = bool(getattr(signal, "is_float", False))
    scale, offset = (signal.scale, signal.offset) if scaled else (1, 0)
    mask = (1 << length) - 1
    byteorder: Literal["big", "little"]
    if big_endian:
        # DBC big-endian start bit is the MSB in "sawtooth" numbering; convert to a bit
        # position counted from the MSB of the frame read as one big-endian integer.
        msb = (start // 8) * 8 + (7 - start % 8)
        shift, byteorder = frame_len * 8 - msb - length, "big"
    else:
        shift, byteorder = start, "little"
    sign_bit, wrap = 1 << (length - 1), 1 << length

    # One closure per case, so the common one (unsigned, unscaled) does nothing extra.
    if is_float:  # IEEE 754 (SIG_VALTYPE_ 1 or 2): the extracted bits are the pattern
        if length not in (32, 64):
            raise ValueError(f"{signal.name}: a float signal must be 32 or 64 bits")
        unpack = struct.Struct(">f" if length == 32 else ">d").unpack

        def extract(data: bytes) -> Number:
            bits = (int.from_bytes(data[:frame_len], byteorder) >> shift) & mask
            value: float = unpack(bits.to_bytes(length // 8, "big"))[0]
            return value * scale + offset
    elif not signed and scale == 1 and offset == 0:

        def extract(data: bytes) -> Number:
            return (int.from_bytes(data[:frame_len], byteorder) >> shift) & mask
    else:

        def extract(data: bytes) -> Number:
            value = (int.from_bytes(data[:frame_len], byteorder) >> shift) & mask
            if signed and value & sign_bit:
                value -= wrap
            return value * scale + offset

    return extract


def _raw_bit(byte: int, bit: int) -> Extract:
    return lambda data: (data[byte] >> bit) & 1


def _raw_masked(byte: int, mask: int) -> Extract:
    return lambda data: data[byte] & mask


def _condition(
    cfg: RuleConfig, value: Any
) -> tuple[Callable[[Number], bool], Callable[[Number], bool]]:
    op, h = cfg.op, cfg.hysteresis
    # (condition, its negation), each one call: this runs on every frame a rule reads.
    tests: dict[str, tuple[Callable[[Number], bool], Callable[[Number], bool]]] = {
        "==": (lambda v: v == value, lambda v: v != value),
        "!=": (lambda v: v != value, lambda v: v == value),
        ">": (lambda v: v > value, lambda v: v <= value),
        ">=": (lambda v: v >= value, lambda v: v < value),
        "<": (lambda v: v < value, lambda v: v >= value),
        "<=": (lambda v: v <= value, lambda v: v > value),
        "in": (lambda v: v in value, lambda v: v not in value),
    }
    on, off = tests[op]
    if not h:
        return on, off
    # Fire above the threshold, re-arm only once clearly back below it (and vice versa).
    if op in (">", ">="):
        return on, lambda v: v < value - h
    return on, lambda v: v > value + h


def compile_rules(
    rules: RulesFile, databases: Sequence[Any], source: str = "rules"
) -> list[CompiledRule]:
    """Check every rule against the DBC databases (cantools) and compile it."""
    compiled = []
    for cfg in rules.rules:
        where = f"rule {cfg.name!r}"
        if cfg.frame_id is not None:
            assert cfg.byte is not None
            byte = cfg.byte
            if cfg.bit is not None:
                bit = cfg.bit
                extract = _raw_bit(byte, bit)
                condition, released = (lambda v: v == 1), (lambda v: v == 0)
                label = f"0x{cfg.frame_id:X}[{byte}].{bit}"
            else:
                mask = cfg.mask
                assert mask is not None
                target: Any = frozenset(cfg.value) if isinstance(cfg.value, list) else cfg.value
                extract = _raw_masked(byte, mask)
                condition, released = _condition(cfg, target)
                label = f"0x{cfg.frame_id:X}[{byte}]&0x{mask:02X}"
            compiled.append(
                CompiledRule(
                    config=cfg,
                    frame_id=cfg.frame_id,
                    extended=cfg.extended,
                    min_length=byte + 1,
                    extract=extract,
                    condition=condition,
                    released=released,
                    cycle_s=cfg.cycle_ms / 1000 if cfg.cycle_ms else None,
                    where=label,
                    ignore=frozenset(v for v in cfg.ignore if not isinstance(v, str)),
                )
            )
            continue
        message = _find_message(databases, cfg.message or "", source, where)
        signal = _find_signal(message, cfg.signal or "", source, where)
        value = _resolve_value(cfg.value, signal, source, where)
        ignore = frozenset(_resolve_value(v, signal, source, where) for v in cfg.ignore)
        condition, released = _condition(cfg, value)
        mux = None
        if signal.multiplexer_ids:
            mux_signal = next(s for s in message.signals if s.is_multiplexer)
            known = frozenset(i for s in message.signals for i in (s.multiplexer_ids or ()))
            mux = (
                signal_extractor(mux_signal, message.length, scaled=False),
                frozenset(signal.multiplexer_ids),
                known,
            )
        cycle_ms = cfg.cycle_ms or message.cycle_time
        compiled.append(
            CompiledRule(
                config=cfg,
                frame_id=message.frame_id,
                extended=message.is_extended_frame,
                min_length=message.length,
                extract=signal_extractor(signal, message.length),
                condition=condition,
                released=released,
                cycle_s=cycle_ms / 1000 if cycle_ms else None,
                where=f"{message.name}.{signal.name}",
                mux=mux,
                ignore=ignore,
            )
        )
    return compiled


def _find_message(databases: Sequence[Any], name: str, source: str, where: str) -> Any:
    for db in databases:
        try:
            return db.get_message_by_name(name)
        except KeyError:
            continue
    raise RulesError(source, where, f"message {name!r} is in none of the DBC files")


def _find_signal(message: Any, name: str, source: str, where: str) -> Any:
    try:
        return message.get_signal_by_name(name)
    except KeyError:
        names = ", ".join(s.name for s in message.signals[:8])
        raise RulesError(
            source, where, f"message {message.name} has no signal {name!r} (it has {names}…)"
        ) from None


def _resolve_value(
    value: Number | str | list[Number | str] | None, signal: Any, source: str, where: str
) -> Any:
    """Numbers stay numbers; a string names one of the signal's DBC value choices."""

    def one(v: Number | str) -> Number:
        if not isinstance(v, str):
            return v
        for number, label in (signal.choices or {}).items():
            if str(label) == v:
                return int(number)
        choices = ", ".join(str(c) for c in (signal.choices or {}).values()) or "none"
        raise RulesError(
            source, where, f"{signal.name} has no value named {v!r} (choices: {choices})"
        )

    if isinstance(value, list):
        return frozenset(one(v) for v in value)
    assert value is not None
    return one(value)
