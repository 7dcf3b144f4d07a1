"""Finding a raw-bit rule without a DBC: which bits does the event change?

Record the car at rest (baseline) and while doing the thing (door opened, light bar on),
or split one capture at the moment it happened. A candidate is a bit that held one value
throughout the baseline and takes the other value in the event capture. Candidates that
change alone (few other bits of their frame changing with them) and seldom rank first:
a door switch flips one bit once; a counter or a sensor reading changes many, often.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import can


@dataclass(frozen=True)
class BitCandidate:
    frame_id: int
    extended: bool
    byte: int
    bit: int
    baseline_value: int
    transitions: tuple[float, ...]  # times (s, from the event capture's start) it changed
    alongside: int  # most other bits of the same frame that changed at the same moment

    @property
    def rule(self) -> dict[str, object]:
        """The keys of a raw-bit rule that fires when the bit leaves its baseline value
        (add a name and a kind); integers, as the rules file takes them."""
        new = 1 - self.baseline_value
        return {
            "frame_id": self.frame_id,
            "extended": self.extended,
            "byte": self.byte,
            "mask": 1 << self.bit,
            "value": new << self.bit,
        }


def _bits(data: bytes) -> Iterable[tuple[int, int, int]]:
    for byte, value in enumerate(data):
        for bit in range(8):
            yield byte, bit, (value >> bit) & 1


def find_candidates(
    baseline: Sequence[can.Message], event: Sequence[can.Message]
) -> list[BitCandidate]:
    seen: dict[tuple[int, bool, int, int], set[int]] = defaultdict(set)
    for msg in baseline:
        if not msg.is_error_frame:
            for byte, bit, value in _bits(bytes(msg.data)):
                seen[(msg.arbitration_id, msg.is_extended_id, byte, bit)].add(value)
    constant = {key: next(iter(values)) for key, values in seen.items() if len(values) == 1}
    start = event[0].timestamp if event else 0.0
    # Each frame's last state at rest, so a change at the very start of the event counts.
    last: dict[tuple[int, bool], bytes] = {
        (m.arbitration_id, m.is_extended_id): bytes(m.data)
        for m in baseline
        if not m.is_error_frame
    }
    changes: dict[tuple[int, bool, int, int], list[float]] = defaultdict(list)
    crowd: dict[tuple[int, bool, int, int], int] = defaultdict(int)
    left: set[tuple[int, bool, int, int]] = set()
    for msg in event:
        if msg.is_error_frame:
            continue
        key = (msg.arbitration_id, msg.is_extended_id)
        data = bytes(msg.data)
        prev = last.get(key)
        flipped = []
        for byte, bit, value in _bits(data):
            bit_key = (*key, byte, bit)
            base = constant.get(bit_key)
            if base is not None and value != base:
                left.add(bit_key)
            if prev is not None and byte < len(prev) and ((prev[byte] >> bit) & 1) != value:
                flipped.append(bit_key)
        for bit_key in flipped:
            changes[bit_key].append(round(msg.timestamp - start, 3))
            crowd[bit_key] = max(crowd[bit_key], len(flipped) - 1)
        last[key] = data
    found = [
        BitCandidate(
            k[0], k[1], k[2], k[3], constant[k], tuple(changes.get(k, ())), crowd.get(k, 0)
        )
        for k in left
    ]
    found.sort(key=lambda c: (c.alongside, len(c.transitions) or 99, c.frame_id, c.byte, c.bit))
    return found


def split(
    frames: Sequence[can.Message], at_s: float
) -> tuple[list[can.Message], list[can.Message]]:
    """One capture as (baseline, event): before and after ``at_s`` from its first frame."""
    if not frames:
        return [], []
    cut = frames[0].timestamp + at_s
    return [m for m in frames if m.timestamp < cut], [m for m in frames if m.timestamp >= cut]
