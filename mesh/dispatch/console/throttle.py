"""Back-off for failed console logins, per client address and per user name. Pure.

After ``free_failures`` failures of one key within ``forget_after_s``, each further failure
blocks that key for twice as long as the last (``first_delay_s``, 2×, 4×, … up to
``max_delay_s``); a blocked key is refused before any password is checked. A success
clears the key. Bounded: at most ``max_tracked`` keys are kept; at the cap the key whose
last failure is oldest is forgotten, and a key with no failure for ``forget_after_s`` is
forgotten when next looked at.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class LoginLimits:
    free_failures: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 300.0
    forget_after_s: float = 900.0
    max_tracked: int = 10_000
    # Password checks (scrypt, 16 MiB and ~50 ms each) running at once; more are refused.
    concurrent_checks: int = 2


@dataclass
class _Failures:
    count: int
    last_at: float
    blocked_until: float


class FailureBackoff:
    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        # Ordered by last failure, oldest first: the one forgotten at the cap.
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def wait_s(self, key: str, now: float) -> float:
        """How long ``key`` must wait before its next try (0: it may try now)."""
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        if now - entry.last_at > self.limits.forget_after_s:
            del self._keys[key]
            return 0.0
        return max(0.0, entry.blocked_until - now)

    def failed(self, key: str, now: float) -> None:
        entry = self._keys.pop(key, None)
        if entry is None or now - entry.last_at > self.limits.forget_after_s:
            entry = _Failures(count=0, last_at=now, blocked_until=0.0)
        entry.count += 1
        entry.last_at = now
        over = entry.count - self.limits.free_failures
        if over >= 0:
            delay = self.limits.first_delay_s * 2.0 ** min(over, 32)
            entry.blocked_until = now + min(delay, self.limits.max_delay_s)
        self._keys[key] = entry
        while len(self._keys) > self.limits.max_tracked:
            self._keys.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)
