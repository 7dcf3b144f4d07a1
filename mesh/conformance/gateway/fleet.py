"""What each simulated camera answers to a command the gateway sent. Pure: a command
and the topic it came on in, the replies to publish out (the runner signs and sends them).

A camera hears its own topic, its unit's, its cell's (by its own fix) and cmd/all, except
the late and the moved ones, which hear only their own topic (so only the gateway's retry
reaches them). Whether a command concerns a camera is decided by the reference rules
(``mesh.decide.camera.scope``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.topics import ParsedTopic, TopicKind
from mesh.conformance.gateway.scene import Behaviour, GatewayScene, SimCamera
from mesh.decide.camera import CameraView, scope
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraRole,
    CancelAck,
    CancelOutcome,
    RecordCancel,
    RecordStart,
)

OWN_TOPIC_ONLY = frozenset({Behaviour.RETRY_ONLY, Behaviour.MOVED})
# A forged ack in an unsigned run: the id of no camera, on conf-forged's topic.
MISMATCHED_ID = "conf-forged-x"


@dataclass(frozen=True)
class Reply:
    """An answer to publish on ``{p}/ack/{issuer}/{topic_camera}``, signed as ``seal``
    says: "own" (the camera's key), "none", "attacker" (a key nobody trusts), or another
    camera's id (its key)."""

    topic_camera: str
    issuer: str
    answer: CameraAck | CancelAck
    seal: str = "own"
    forgery: str = ""  # what is wrong with it, for a forged ack


class Fleet:
    def __init__(self, scene: GatewayScene, *, signed: bool, eager_event: str) -> None:
        self.scene = scene
        self.signed = signed
        self.eager_event = eager_event
        self.claims: set[tuple[str, str]] = set()  # (camera, activation) it acted on
        self.answered: set[tuple[str, str]] = set()  # (camera, activation) answered once
        self.cancelled: set[tuple[str, str]] = set()

    def on_command(
        self, parsed: ParsedTopic, command: RecordStart | RecordCancel, now_ns: int
    ) -> list[Reply]:
        replies: list[Reply] = []
        for camera in self.scene.cameras:
            if isinstance(command, RecordCancel):
                replies += self._cancel(camera, parsed, command, now_ns)
            else:
                replies += self._start(camera, parsed, command, now_ns)
        return replies

    def hears(self, camera: SimCamera, parsed: ParsedTopic) -> bool:
        if parsed.kind is TopicKind.COMMAND_CAMERA:
            return parsed.args[0] == camera.camera_id
        if camera.behaviour in OWN_TOPIC_ONLY:
            return False
        if parsed.kind is TopicKind.COMMAND_UNIT:
            return parsed.args[0] == camera.unit_id
        if parsed.kind is TopicKind.COMMAND_CELL:
            return parsed.args[0] == self.scene.cell(camera)
        return parsed.kind is TopicKind.COMMAND_ALL

    def concerned(self, camera: SimCamera, command: RecordStart) -> bool:
        view = CameraView(camera.camera_id, camera.unit_id, self.scene.fix(camera), CameraRole.BODY)
        return scope(command, view)[0]

    def _start(
        self, camera: SimCamera, parsed: ParsedTopic, command: RecordStart, now_ns: int
    ) -> list[Reply]:
        b = camera.behaviour
        key = (camera.camera_id, command.activation_id)
        if b is Behaviour.EAGER:
            if command.trigger.event_id != self.eager_event or key in self.answered:
                return []
            self.answered.add(key)
            self.claims.add(key)
            return [self._ack(camera, command, AckStatus.STARTED, "a fresher fix", now_ns)]
        if not self.hears(camera, parsed):
            return []
        direct = parsed.kind is TopicKind.COMMAND_CAMERA
        if b in (Behaviour.SILENT, Behaviour.OFFLINE, Behaviour.FAR):
            return []
        if b is Behaviour.MOVED:
            reason = f"out of range: 5000 m > {command.radius_m:g} m (it moved)"
            return [self._ack(camera, command, AckStatus.OUT_OF_RANGE, reason, now_ns)]
        if not direct and not self.concerned(camera, command):
            return []
        if b is Behaviour.FORGED:
            if key in self.answered:
                return []
            self.answered.add(key)
            return self._forged(camera, command, now_ns)
        if b is Behaviour.REJECTS:
            if key in self.answered:
                return []
            self.answered.add(key)
            reason = "conformance: refused on purpose"
            return [self._ack(camera, command, AckStatus.REJECTED, reason, now_ns)]
        if key in self.claims:
            if not direct:
                return []  # a duplicate on a shared topic
            return [self._ack(camera, command, AckStatus.ALREADY_RECORDING, "duplicate", now_ns)]
        self.claims.add(key)
        self.answered.add(key)
        ack = self._ack(camera, command, AckStatus.STARTED, "conformance: started", now_ns)
        # The prompt camera says it twice: a duplicate ack, which must count once.
        return [ack, ack] if b is Behaviour.PROMPT else [ack]

    def _cancel(
        self, camera: SimCamera, parsed: ParsedTopic, cancel: RecordCancel, now_ns: int
    ) -> list[Reply]:
        key = (camera.camera_id, cancel.activation_id)
        if key not in self.claims or key in self.cancelled or not self.hears(camera, parsed):
            return []
        self.cancelled.add(key)
        answer = CancelAck(
            activation_id=cancel.activation_id,
            camera_id=camera.camera_id,
            unit_id=camera.unit_id,
            outcome=CancelOutcome.STOPPED,
            reason="conformance: stopped",
            cancel_issuer=cancel.issuer,
            cancel_at_ns=cancel.at_ns,
            received_at_ns=now_ns,
        )
        return [Reply(camera.camera_id, cancel.issuer, answer)]

    def _ack(
        self,
        camera: SimCamera,
        command: RecordStart,
        status: AckStatus,
        reason: str,
        now_ns: int,
        *,
        camera_id: str | None = None,
        seal: str = "own",
        forgery: str = "",
    ) -> Reply:
        started = status is AckStatus.STARTED
        answer = CameraAck(
            activation_id=command.activation_id,
            camera_id=camera_id or camera.camera_id,
            unit_id=camera.unit_id,
            status=status,
            reason=reason,
            attempt=command.attempt,
            received_at_ns=now_ns,
            recording_started_at_ns=now_ns if started else None,
            pre_event_kept_s=float(command.pre_event_s) if started else None,
        )
        return Reply(camera.camera_id, command.issuer, answer, seal, forgery)

    def _forged(self, camera: SimCamera, command: RecordStart, now_ns: int) -> list[Reply]:
        """`started` acks for the forged camera that the gateway must refuse."""
        started = AckStatus.STARTED
        if not self.signed:
            # On its topic, naming another camera: id_mismatch.
            what = f"naming {MISMATCHED_ID} on its topic"
            return [
                self._ack(
                    camera,
                    command,
                    started,
                    "forged",
                    now_ns,
                    camera_id=MISMATCHED_ID,
                    forgery=what,
                )
            ]
        other = self.scene.camera(Behaviour.PROMPT).camera_id
        forgeries = (
            ("none", "unsigned"),
            ("attacker", "a stranger's key"),
            (other, f"{other}'s key"),
        )
        return [
            self._ack(camera, command, started, f"forged: {what}", now_ns, seal=seal, forgery=what)
            for seal, what in forgeries
        ]
