"""Is the gateway (or the dispatch console) fit to do its job? A pure decision: the state
read at one moment in, a status and its reasons out (docs/observability.md).

- ``unhealthy``: it cannot do what it is for: the activation log cannot be written (no
  record of what was commanded), or the event loop is stalled.
- ``degraded``: it works, with a handicap an operator should know about: the broker link
  is down (commands wait for it, up to their expiry), the store-and-forward queue is deep
  or old, or held in memory because its file cannot be opened (what waits there is lost
  if the gateway stops), the event loop lags.
- ``ok``: none of the above.

Degraded still answers HTTP 200: a gateway waiting out a broker outage is doing the right
thing, and restarting it would not bring the broker back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_RANK = {Status.OK: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}


@dataclass(frozen=True)
class Limits:
    # Store-and-forward queue (mesh/gateway/outbox.py): deeper or older than this is worth a look.
    outbox_depth: int = 100
    outbox_age_s: float = 60.0
    # How late the event loop may wake up: beyond the first it lags, beyond the second
    # it is stalled (acks and commands wait that long too).
    loop_lag_s: float = 0.25
    loop_stall_s: float = 5.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class GatewayState:
    """What the health decision reads; every field is a plain value taken at one moment."""

    # The activation log's write error, if it has one (a failed log refuses every append).
    log_error: str | None
    link_up: bool
    # The link has never been up since start (the broker may still be starting).
    link_never_up: bool = False
    outbox_depth: int | None = None
    outbox_oldest_age_s: float | None = None
    loop_lag_s: float = 0.0
    # Why the outbox is held in memory rather than in its file (None: in its file). The
    # error names the file (mesh/gateway/outbox.py, ``Outbox.fallback_error``).
    outbox_fallback_error: str | None = None


@dataclass(frozen=True)
class Health:
    status: Status
    reasons: tuple[str, ...] = ()
    checks: dict[str, object] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 503 if self.status is Status.UNHEALTHY else 200

    def as_json(self) -> dict[str, object]:
        return {"status": self.status.value, "reasons": list(self.reasons), "checks": self.checks}


def gateway_health(state: GatewayState, limits: Limits = DEFAULT_LIMITS) -> Health:
    found: list[tuple[Status, str]] = []
    if state.log_error is not None:
        found.append((Status.UNHEALTHY, f"activation log cannot be written: {state.log_error}"))
    if state.loop_lag_s >= limits.loop_stall_s:
        found.append((Status.UNHEALTHY, f"event loop stalled for {state.loop_lag_s:.1f} s"))
    elif state.loop_lag_s >= limits.loop_lag_s:
        found.append((Status.DEGRADED, f"event loop lags by {state.loop_lag_s * 1000:.0f} ms"))
    if not state.link_up:
        never = " (never connected since start)" if state.link_never_up else ""
        found.append((Status.DEGRADED, f"broker link is down{never}"))
    if state.outbox_depth is not None and state.outbox_depth >= limits.outbox_depth:
        found.append((Status.DEGRADED, f"outbox holds {state.outbox_depth} undelivered messages"))
    if state.outbox_fallback_error is not None:
        found.append(
            (Status.DEGRADED, f"outbox held in memory, not durable: {state.outbox_fallback_error}")
        )
    age = state.outbox_oldest_age_s
    if age is not None and age >= limits.outbox_age_s:
        found.append((Status.DEGRADED, f"oldest undelivered outbox message is {age:.0f} s old"))
    return _decide(found, asdict(state))


def console_health(*, link_up: bool, pages: int) -> Health:
    """The dispatch console: without the broker it shows nothing live and sends nothing."""
    found = [] if link_up else [(Status.UNHEALTHY, "broker link is down")]
    return _decide(found, {"link_up": link_up, "pages": pages})


def _decide(found: list[tuple[Status, str]], checks: dict[str, object]) -> Health:
    status = max((s for s, _ in found), key=_RANK.__getitem__, default=Status.OK)
    return Health(status, tuple(reason for _, reason in found), checks)
