"""Driving the gateway's real Coordinator without a broker (tests/unit/test_coordinator.py).

In the manner of Home Assistant's bluetooth test helpers, which hand an advertisement to
the real manager instead of mocking it: the Coordinator is the one the gateway builds,
with a real activation log on disk and a real presence registry; only its ``Publisher``
(the seam it already publishes through, `mesh/gateway/coordinator.py`) is a fake that
records what was sent and can refuse to send. ``inject_ack`` and ``inject_cancel`` hand
the Coordinator what a camera or dispatch would, through the same calls the daemon makes
(``on_ack``, ``on_cancel``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bridge.mqtt.client import LinkDown
from bridge.topics import Topics
from mesh.clock import SYSTEM_CLOCK
from mesh.decide.geo import offset
from mesh.decide.policy import Policy
from mesh.decide.presence import PresenceRegistry
from mesh.gateway.coordinator import Coordinator
from mesh.journal.store import ActivationLog
from mesh.protocol.codec import decode
from mesh.protocol.models import (
    WIRE_MODELS,
    AckStatus,
    ActivationRecord,
    CameraAck,
    CameraPresence,
    CameraRole,
    CancelRequest,
    Escalation,
    GeoPoint,
    Position,
    RecordCancel,
    RecordStart,
    TriggerReceipt,
)
from tests.harness import CENTER, UNIT

TOPICS = Topics("unit-test/mesh/v2")
ISSUER = f"gw-{UNIT}"
NS = 1_000_000_000


@dataclass(frozen=True)
class Sent:
    topic: str
    payload: bytes


def wire(payload: bytes) -> object:
    """A payload as the other end reads it: the model its ``type`` names."""
    return decode(WIRE_MODELS[json.loads(payload)["type"]], payload)


@dataclass
class FakePublisher:
    """The Coordinator's Publisher, recording instead of sending.

    ``publish`` (commands, awaited with PUBACKs) raises ``LinkDown`` while ``down``, as
    the link does when the broker is gone. A command it does send is answered by the
    cameras told to (``answer``): their acks reach the Coordinator as the next thing on
    the event loop, as a fast camera's would, so no test races the ack deadline.
    ``deliver``, ``deliver_final`` (what the outbox keeps) and ``publish_soon``
    (progress) only record. Finals stay queued until the Coordinator settles them."""

    down: bool = False
    coordinator: Coordinator | None = None
    answers: dict[str, tuple[AckStatus, int, str]] = field(default_factory=dict)
    answered: set[tuple[str, str, int]] = field(default_factory=set)
    published: list[Sent] = field(default_factory=list)
    soon: list[Sent] = field(default_factory=list)
    delivered: list[Sent] = field(default_factory=list)
    finals: dict[str, tuple[bytes, list[Sent]]] = field(default_factory=dict)
    settled: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    refused: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait_s: float | None = 10.0,
    ) -> None:
        if self.down:
            self.refused += 1
            raise LinkDown("the fake link is down")
        self.published.append(Sent(topic, payload))
        self._changed.set()
        self._answer(topic, payload)

    def answer(
        self,
        camera_id: str,
        status: AckStatus = AckStatus.STARTED,
        *,
        from_attempt: int = 0,
        reason: str = "",
    ) -> None:
        """``camera_id`` acks every command that reaches it from attempt ``from_attempt``
        on (0: the broadcast; n: the nth direct retry), once an attempt."""
        self.answers[camera_id] = (status, from_attempt, reason)

    def _answer(self, topic: str, payload: bytes) -> None:
        command = wire(payload)
        if not isinstance(command, RecordStart) or self.coordinator is None:
            return
        # A camera's own topic reaches that camera; the broadcast's reach every camera.
        own = TOPICS.command_camera("")
        reached = [topic.removeprefix(own)] if topic.startswith(own) else list(self.answers)
        for camera_id in reached:
            if camera_id not in self.answers:
                continue
            status, from_attempt, reason = self.answers[camera_id]
            key = (command.activation_id, camera_id, command.attempt)
            if command.attempt < from_attempt or key in self.answered:
                continue
            self.answered.add(key)
            asyncio.get_running_loop().call_soon(
                functools.partial(
                    inject_ack,
                    self.coordinator,
                    command.activation_id,
                    camera_id,
                    status,
                    attempt=command.attempt,
                    reason=reason,
                )
            )

    def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        self.soon.append(Sent(topic, payload))

    def deliver(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expires_at_ns: int | None = None,
    ) -> None:
        self.delivered.append(Sent(topic, payload))
        self._changed.set()

    def deliver_final(
        self, activation_id: str, outcome: bytes, messages: Sequence[tuple[str, bytes]]
    ) -> None:
        self.finals[activation_id] = (outcome, [Sent(t, p) for t, p in messages])
        self._changed.set()

    def queued_final(self, activation_id: str) -> bytes | None:
        final = self.finals.get(activation_id)
        return None if final is None or activation_id in self.settled else final[0]

    def settle_final(self, activation_id: str) -> None:
        self.settled.append(activation_id)

    def keep_finals(self, activation_ids: Collection[str]) -> None:
        self.kept = list(activation_ids)

    # --- what was sent, decoded ----------------------------------------------------------
    def commands(self, topic: str | None = None) -> list[tuple[str, RecordStart]]:
        """Every record-start published (on ``topic`` only, if given), in order."""
        out = []
        for sent in self.published:
            message = wire(sent.payload)
            if isinstance(message, RecordStart) and topic in (None, sent.topic):
                out.append((sent.topic, message))
        return out

    def receipts(self) -> list[TriggerReceipt]:
        return [m for m in self._decoded(self.delivered) if isinstance(m, TriggerReceipt)]

    def escalations_at_once(self) -> list[Escalation]:
        """Escalations told during the activation (an unreachable camera)."""
        return [m for m in self._decoded(self.delivered) if isinstance(m, Escalation)]

    def escalations(self) -> list[Escalation]:
        """Escalations told at once, then those sent with a final record."""
        final = [
            m
            for _, messages in self.finals.values()
            for m in self._decoded(messages)
            if isinstance(m, Escalation)
        ]
        return self.escalations_at_once() + final

    def cancels(self) -> list[tuple[str, RecordCancel]]:
        return [
            (s.topic, m) for s in self.delivered if isinstance(m := wire(s.payload), RecordCancel)
        ]

    def final_record(self, activation_id: str) -> ActivationRecord:
        _, messages = self.finals[activation_id]
        (record,) = [m for m in self._decoded(messages) if isinstance(m, ActivationRecord)]
        return record

    def records_delivered(self) -> list[ActivationRecord]:
        """Final records sent outside the outbox's final (a cancel after the end)."""
        return [m for m in self._decoded(self.delivered) if isinstance(m, ActivationRecord)]

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 5) -> None:
        """Until ``condition`` holds after something was sent; fails after ``timeout_s``."""

        async def until() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout_s)

    @staticmethod
    def _decoded(sent: Sequence[Sent]) -> list[object]:
        return [wire(s.payload) for s in sent]


def camera(
    camera_id: str,
    unit: str = UNIT,
    *,
    north_m: float = 20.0,
    online: bool = True,
    offline_s: float = 0.0,
    role: CameraRole = CameraRole.BODY,
) -> CameraPresence:
    """A camera heard just now (or ``offline_s`` ago), with a fresh fix near the car."""
    now = SYSTEM_CLOCK.wall_ns()
    lat, lon = offset(CENTER.lat, CENTER.lon, north_m, 0.0)
    return CameraPresence(
        camera_id=camera_id,
        unit_id=unit,
        role=role,
        online=online,
        recording=False,
        position=Position(lat=lat, lon=lon, fix_at_ns=now),
        last_seen_ns=now - int(offline_s * NS),
    )


def policy(**rules: object) -> Policy:
    """The shipped policy with ``rules`` laid over every kind's (short deadlines, etc.)."""
    base = Policy()
    return Policy.model_validate(
        {"defaults": rules, "kinds": {str(kind): rules for kind in base.kinds}}
    )


@dataclass
class Rig:
    coordinator: Coordinator
    publisher: FakePublisher
    presence: PresenceRegistry
    log: ActivationLog


@asynccontextmanager
async def running_coordinator(
    log_path: Path,
    cameras: Sequence[CameraPresence],
    rules: Policy,
    *,
    position: GeoPoint | None = CENTER,
    publisher: FakePublisher | None = None,
) -> AsyncIterator[Rig]:
    """A Coordinator as the gateway builds it (real log, real presence registry), on a
    fake publisher; its activations are cancelled and its log closed on the way out."""
    presence = PresenceRegistry()
    for presence_record in cameras:
        presence.update(presence_record)
    log = ActivationLog(log_path)
    fake = publisher or FakePublisher()
    fake.coordinator = coordinator = Coordinator(
        unit_id=UNIT,
        issuer=ISSUER,
        policy=rules,
        log=log,
        publisher=fake,
        topics=TOPICS,
        presence=presence,
        position=lambda: position,
        clock=SYSTEM_CLOCK,
    )
    try:
        yield Rig(coordinator, fake, presence, log)
    finally:
        await coordinator.tasks.cancel_all()
        log.close()


def inject_ack(
    coordinator: Coordinator,
    activation_id: str,
    camera_id: str,
    status: AckStatus = AckStatus.STARTED,
    *,
    attempt: int = 0,
    reason: str = "",
) -> None:
    """What the daemon does with a camera's ack read off the broker (checked already)."""
    presence = coordinator.presence.get(camera_id)
    now = SYSTEM_CLOCK.wall_ns()
    coordinator.on_ack(
        CameraAck(
            activation_id=activation_id,
            camera_id=camera_id,
            unit_id=presence.unit_id if presence is not None else None,
            status=status,
            reason=reason,
            attempt=attempt,
            received_at_ns=now,
            recording_started_at_ns=now if status is AckStatus.STARTED else None,
        )
    )


def inject_cancel(
    coordinator: Coordinator, activation_id: str, by: str = "officer-1", reason: str = ""
) -> TriggerReceipt:
    """What the daemon does with a cancel request read off the broker (checked already)."""
    return coordinator.on_cancel(
        CancelRequest(
            cancel_id=f"cancel-{uuid.uuid4().hex[:12]}",
            activation_id=activation_id,
            unit_id=UNIT,
            by=by,
            reason=reason,
            at_ns=SYSTEM_CLOCK.wall_ns(),
        )
    )
