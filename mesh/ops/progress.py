"""Progress of a long operation, the counting and the deciding: how far, how fast, and
whether a periodic record is due. No output here (mesh.cli.progress draws a bar on a
terminal or writes log records); the clock is passed in, so tests need no sleeping."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_EVERY_S = 5.0  # between periodic records when not on a terminal


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int | None  # None: not known (yet)
    elapsed_s: float

    @property
    def rate_per_s(self) -> float | None:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def remaining_s(self) -> float | None:
        rate = self.rate_per_s
        if self.total is None or not rate:
            return None
        return max(0, self.total - self.done) / rate

    def fields(self) -> dict[str, object]:
        """For a log record: rounded, and only what is known."""
        out: dict[str, object] = {"done": self.done, "total": self.total}
        out["elapsed_s"] = round(self.elapsed_s, 2)
        if (rate := self.rate_per_s) is not None:
            out["rate_per_s"] = round(rate, 2)
        if (left := self.remaining_s) is not None:
            out["remaining_s"] = round(left, 1)
        return out


class Progress:
    """Fed absolute counts (``update``); says when a periodic record is due: the first
    update after ``every_s`` since the start or the last record. The final record is the
    caller's (``snapshot`` at the end), whatever the timing."""

    def __init__(self, started_s: float, every_s: float = DEFAULT_EVERY_S) -> None:
        if every_s < 0:
            raise ValueError(f"a progress interval must be 0 s or more, not {every_s:g}")
        self.started_s = started_s
        self.every_s = every_s
        self.done = 0
        self.total: int | None = None
        self._last_s = started_s

    def update(self, done: int, total: int | None, now_s: float) -> bool:
        """Record that ``done`` of ``total`` are done; True if a periodic record is due."""
        # Counts never go back (a resend does not undo what was sent) nor past the total.
        self.total = total if total is not None else self.total
        self.done = max(self.done, done)
        if self.total is not None:
            self.done = min(self.done, self.total)
        if now_s - self._last_s < self.every_s:
            return False
        self._last_s = now_s
        return True

    def snapshot(self, now_s: float) -> Snapshot:
        return Snapshot(self.done, self.total, max(0.0, now_s - self.started_s))
