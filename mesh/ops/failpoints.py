"""Named crash points for fault-injection tests (docs/reliability.md).

``TRIGGER_MESH_FAILPOINTS="activation.logged=3,ack.logged=10"`` makes the process kill
itself with SIGKILL the 3rd time it passes ``activation.logged`` (or the 10th time it
passes ``ack.logged``): a crash at an exact step of the coordinator, which timing alone
rarely hits. Unset (every deployment), a failpoint is one dictionary lookup.

The points, in the order an activation passes them:
- ``trigger.received``: a trigger arrived over MQTT, not yet admitted;
- ``activation.logged``: the activation is durable, its command not yet published;
- ``command.published``: the broker took the command, the log does not say so yet;
- ``ack.logged``: an ack is in the log (not necessarily on disk);
- ``activation.queued``: the outcome (final record, escalations) is queued in the
  outbox, not yet sent, and the log does not say `finished` yet;
- ``activation.finished``: the outcome is durable in the log too, not yet published.
"""

from __future__ import annotations

import os
import signal

ENV = "TRIGGER_MESH_FAILPOINTS"


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}: {item!r} is not name=N with N >= 1")
        armed[name.strip()] = int(count)
    return armed


_armed = _parse(os.environ.get(ENV, ""))
_passed: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if this point is armed and its count is reached."""
    if not _armed or name not in _armed:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
