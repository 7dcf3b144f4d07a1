"""Why something was refused: a code from a fixed set, and a reason for people."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    code: str
    reason: str
