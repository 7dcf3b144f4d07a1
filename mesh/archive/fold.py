"""Which presence records the archive keeps as a small difference from an earlier one (pure).

A gateway logs a camera's presence when it changes and when a decision reads it
(mesh/decide/presence.py); both are what ``audit replay`` reads, and every record is in
the log's hash chain, so the archive keeps every one of them exactly. But most of them
repeat the camera's previous presence record but for its times (``last_seen_ns``, the
fix's time and accuracy): a heartbeat. Such a *repeat* is stored as the text that differs
from its *base* (the camera's previous full presence record in the same log and month):
``body == base[:head] + middle + base[len(base) - tail:]``. Anything else (a change:
online, recording, unit, role, position, officer; a removal; another kind) is a full row.
Whether a record is folded never changes what is read back: ``unfold`` rebuilds the body
byte for byte, and ``fold`` refuses unless it does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PRESENCE_KIND = "presence"
# The fields of a presence that a heartbeat changes (mesh/decide/presence.py without_times).
TIMES = ("last_seen_ns",)
POSITION_TIMES = ("fix_at_ns", "accuracy_m")
# A folded record's middle beyond this is not worth folding: stored in full.
MIDDLE_MAX = 256


@dataclass(frozen=True)
class Delta:
    head: int
    tail: int
    middle: str


def presence_key(kind: str, activation_id: str | None, body: str) -> tuple[str, str] | None:
    """(camera id, what a heartbeat does not change, as canonical JSON) of a presence record,
    or None for any other record and for a presence that says the camera was removed."""
    if kind != PRESENCE_KIND or activation_id is not None:
        return None
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("removed"):
        return None
    camera = data.get("camera_id")
    if not isinstance(camera, str):
        return None
    rest = {k: v for k, v in data.items() if k not in TIMES}
    position = rest.get("position")
    if isinstance(position, dict):
        rest["position"] = {k: v for k, v in position.items() if k not in POSITION_TIMES}
    return camera, json.dumps(rest, sort_keys=True, separators=(",", ":"))


def delta(base: str, body: str) -> Delta:
    """The shortest middle between the longest common head and tail of the two texts."""
    limit = min(len(base), len(body))
    head = 0
    while head < limit and base[head] == body[head]:
        head += 1
    tail = 0
    while tail < limit - head and base[len(base) - 1 - tail] == body[len(body) - 1 - tail]:
        tail += 1
    return Delta(head, tail, body[head : len(body) - tail])


def unfold(base: str, folded: Delta) -> str:
    return base[: folded.head] + folded.middle + base[len(base) - folded.tail :]


def fold(base_key: str, base_body: str, key: str, body: str) -> Delta | None:
    """The delta to store for a presence record whose key (``presence_key``) is ``key``,
    given its camera's base record; None when it must be stored in full (a change)."""
    if key != base_key:
        return None
    folded = delta(base_body, body)
    if len(folded.middle) > MIDDLE_MAX or unfold(base_body, folded) != body:
        return None
    return folded


def canonical_hex(value: str) -> bytes | None:
    """A SHA-256 hex digest as 32 bytes, if reading it back (lowercase hex) gives it again."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == 32 and raw.hex() == value else None
