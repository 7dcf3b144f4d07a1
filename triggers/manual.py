"""Manual triggers: a person (a button, the CLI, a dispatcher's form) says "record now"."""

from __future__ import annotations

import time
import uuid

from mesh.protocol.models import Position, SourceRef, SourceType, TriggerEvent, TriggerKind


def manual_trigger(
    kind: TriggerKind,
    unit_id: str,
    *,
    source_id: str,
    position: Position | None = None,
    source_type: SourceType = SourceType.MANUAL,
    observed_at_ns: int | None = None,
) -> TriggerEvent:
    """A new trigger event with a fresh id, observed now unless told otherwise. Manual
    triggers are unauthenticated at the source; the broker's access control vouches for
    whoever may publish them."""
    return TriggerEvent(
        event_id=uuid.uuid4().hex,
        kind=kind,
        source=SourceRef(type=source_type, id=source_id, authenticated=False),
        unit_id=unit_id,
        observed_at_ns=time.time_ns() if observed_at_ns is None else observed_at_ns,
        position=position,
    )
