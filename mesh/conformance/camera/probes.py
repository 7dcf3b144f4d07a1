"""The commands the kit sends a camera, and the record of each one sent. Pure.

Every command of a run has an activation id of its own (``Scene.activation``), so each
answer is matched to the probe that asked for it. Commands live 90 s and may be cancelled
until then: a run takes well under that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mesh.clock import NS
from mesh.conformance.camera.scene import Scene
from mesh.protocol.models import (
    GeoPoint,
    RecordCancel,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)

PRE_EVENT_S = 30
LIFE_S = 90.0
RADIUS_M = 100.0
SOURCE = SourceRef(type=SourceType.MANUAL, id="trigger-mesh-conformance", authenticated=False)
# Beyond the largest clock skew (300 s) and command life (3,600 s) a camera may allow.
FUTURE_S = 400.0
TOO_LONG_S = 3700.0
# An expired command: issued this long ago, valid EXPIRED_LIFE_S: expired 10 s ago.
EXPIRED_ISSUED_S = 40.0
EXPIRED_LIFE_S = 30.0
# A camera MUST accept a command of up to this many bytes (protocol.md).
MAX_COMMAND_BYTES = 16_384
PADDING_FIELD = "conformance_padding"  # a member no version of the protocol has


@dataclass(frozen=True)
class Sent:
    """One message the kit sent the camera."""

    probe: str  # what for (a name in the detail of the checks)
    activation_id: str
    issuer: str  # the issuer the message names (acks go to this issuer's topic)
    attempt: int
    topic: str
    payload: bytes
    mono_s: float
    cancel_at_ns: int | None = None  # a record_cancel's at_ns (a cancel_ack echoes it)

    @property
    def is_cancel(self) -> bool:
        return self.cancel_at_ns is not None


def record_start(
    scene: Scene,
    name: str,
    now_ns: int,
    *,
    origin: GeoPoint | None,
    radius_m: float,
    units: tuple[str, ...] = (),
    attempt: int = 0,
    issuer: str | None = None,
    issued_at_ns: int | None = None,
    life_s: float = LIFE_S,
) -> RecordStart:
    issued = now_ns if issued_at_ns is None else issued_at_ns
    activation_id = scene.activation(name)
    return RecordStart(
        activation_id=activation_id,
        issuer=issuer or scene.issuer,
        trigger=TriggerSummary(
            event_id=activation_id,
            kind=TriggerKind.MANUAL,
            source=SOURCE,
            unit_id=scene.unit_id or "conformance",
            observed_at_ns=issued,
        ),
        issued_at_ns=issued,
        origin=origin,
        radius_m=radius_m,
        pre_event_s=PRE_EVENT_S,
        targets=Targets(units=units),
        expires_at_ns=issued + int(life_s * NS),
        attempt=attempt,
        cancel_until_ns=issued + int(life_s * NS),
    )


def near(scene: Scene, name: str, now_ns: int, **kw: Any) -> RecordStart:
    """A command that concerns the camera: its position within the radius, or (the kit
    knowing no position) its unit targeted."""
    if scene.position is not None:
        return record_start(scene, name, now_ns, origin=scene.position, radius_m=RADIUS_M, **kw)
    assert scene.unit_id is not None
    return record_start(
        scene, name, now_ns, origin=None, radius_m=0.0, units=(scene.unit_id,), **kw
    )


def unit_targeted(scene: Scene, name: str, now_ns: int, **kw: Any) -> RecordStart:
    assert scene.unit_id is not None
    return record_start(
        scene, name, now_ns, origin=None, radius_m=0.0, units=(scene.unit_id,), **kw
    )


def far(scene: Scene, name: str, now_ns: int, **kw: Any) -> RecordStart:
    """A command that does not concern the camera: 5 km away (or, the kit knowing no
    position, somewhere with no unit targeted: a camera without a fix is not in range)."""
    origin = scene.far() or GeoPoint(lat=0.0, lon=0.0)
    return record_start(scene, name, now_ns, origin=origin, radius_m=RADIUS_M, **kw)


def expired(scene: Scene, name: str, now_ns: int) -> RecordStart:
    return near(
        scene,
        name,
        now_ns,
        issued_at_ns=now_ns - int(EXPIRED_ISSUED_S * NS),
        life_s=EXPIRED_LIFE_S,
    )


def retry(command: RecordStart) -> RecordStart:
    """The gateway's next attempt of the same command (so, signed afresh)."""
    return command.model_copy(update={"attempt": command.attempt + 1})


def record_cancel(
    scene: Scene, name: str, now_ns: int, *, issuer: str | None = None
) -> RecordCancel:
    return RecordCancel(
        activation_id=scene.activation(name),
        issuer=issuer or scene.issuer,
        reason="conformance kit",
        at_ns=now_ns,
    )


# --- malformed payloads ---------------------------------------------------------------
def flipped_times(value: Any) -> Any:
    """``value`` (a decoded JSON payload) with every ``*_ns`` time in the other JSON type:
    a number as a string of its digits, a string of digits as a number."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.endswith("_ns") and isinstance(item, int) and not isinstance(item, bool):
                out[key] = str(item)
            elif key.endswith("_ns") and isinstance(item, str) and item.isdigit():
                out[key] = int(item)
            else:
                out[key] = flipped_times(item)
        return out
    if isinstance(value, list):
        return [flipped_times(item) for item in value]
    return value


def sized(build: Callable[[int], bytes], size: int) -> bytes:
    """The largest ``build(n)`` (n: padding characters) of at most ``size`` bytes."""
    low, high = 0, size
    if len(build(0)) > size:
        raise ValueError(f"even unpadded the payload exceeds {size} bytes")
    while low < high:
        mid = (low + high + 1) // 2
        if len(build(mid)) <= size:
            low = mid
        else:
            high = mid - 1
    return build(low)


def oversized(build: Callable[[int], bytes], size: int) -> bytes:
    """The smallest ``build(n)`` of more than ``size`` bytes."""
    low, high = 0, size + 1
    while low < high:
        mid = (low + high) // 2
        if len(build(mid)) > size:
            high = mid
        else:
            low = mid + 1
    return build(low)
