"""What the checks of one run share: the options, the session, the scene once the
camera's presence told the kit where it is, and what earlier checks left behind (the
command that started the recording, the claims the camera holds, the silences to look at
again at the end)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.conformance.camera import judge
from mesh.conformance.camera.judge import Answer
from mesh.conformance.camera.probes import Sent
from mesh.conformance.camera.process import CameraProcess
from mesh.conformance.camera.scene import Scene
from mesh.conformance.camera.session import CameraSession, Keys
from mesh.conformance.verdict import Check, Finding, not_run
from mesh.protocol.models import CameraPresence, GeoPoint, RecordStart


@dataclass(frozen=True)
class CameraOptions:
    camera_id: str
    prefix: str
    unit_id: str | None = None
    position: GeoPoint | None = None
    issuer: str = "conformance-gw"
    other_issuer: str = "conformance-gw-2"
    timeout_s: float = 5.0
    quiet_s: float = 1.0
    camera_cmd: list[str] | None = None
    camera_log: Path | None = None
    move_cmd: list[str] | None = None
    keys: Keys = field(default_factory=Keys)


@dataclass
class Silence:
    """A check that passed on silence, to look at again once the run is over: an answer
    that came after its quiet window fails it all the same."""

    check: Check
    sent: list[Sent]
    rejudge: Callable[[list[Answer]], Finding]


class NeedsError(Exception):
    """A check cannot run: ``finding`` says why (not run)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


@dataclass
class CameraRun:
    options: CameraOptions
    url: BrokerUrl
    topics: Topics
    session: CameraSession
    tag: str
    process: CameraProcess | None = None
    scene_: Scene | None = None
    presence_payload: bytes | None = None  # the first presence the kit read
    presence: CameraPresence | None = None
    recording_at_start: bool = False
    start_mark: int = 0  # the inbox index from which the camera's own messages count
    # The kit's view of the camera's recording: the command that started it, its bytes.
    started_by: RecordStart | None = None
    started_payload: bytes | None = None
    first_answer: Answer | None = None  # to the first genuine command
    before_start: list[str] = field(default_factory=list)  # probes that must start nothing
    # (activation name, issuer) of every claim the camera acknowledged, in order.
    claims: list[tuple[str, str]] = field(default_factory=list)
    out_of_range_name: str | None = None
    stop_sent: Sent | None = None
    moved: bool = False
    silences: list[Silence] = field(default_factory=list)
    answers_by_name: dict[str, Answer | None] = field(default_factory=dict)

    @property
    def scene(self) -> Scene:
        if self.scene_ is None:
            raise NeedsError(not_run("the camera's unit is not known: no presence, no --unit"))
        return self.scene_

    @property
    def own(self) -> str:
        return self.topics.command_camera(self.options.camera_id)

    @property
    def signed(self) -> bool:
        return self.options.keys.signed

    @staticmethod
    def now() -> int:
        return time.time_ns()

    def need_cell(self) -> str:
        cell = self.scene.cell
        if cell is None:
            raise NeedsError(
                not_run("the camera's position is not known: no fix in its presence, no --position")
            )
        return cell

    def need_unit(self) -> str:
        unit = self.scene.unit_id
        if unit is None:
            raise NeedsError(not_run("the camera's unit is not known"))
        return unit

    def need_recording(self) -> None:
        if self.started_by is None:
            raise NeedsError(not_run("the camera never started recording for the kit"))

    def claimed(self, name: str, issuer: str, answer: Answer | None) -> None:
        """Note a claim if ``answer`` acted on the command (started or joined)."""
        acted = (
            answer is not None and answer.ack is not None and answer.ack.status in judge.STARTING
        )
        if acted and (name, issuer) not in self.claims:
            self.claims.append((name, issuer))

    def silence(
        self,
        check: Check,
        sent: list[Sent],
        rejudge: Callable[[list[Answer]], Finding],
    ) -> Finding:
        """Judge the answers to ``sent`` now, and again at the end of the run."""
        self.silences.append(Silence(check, sent, rejudge))
        return rejudge(self.answers_to_all(sent))

    def answers_to_all(self, sent: list[Sent]) -> list[Answer]:
        return [a for s in sent for a in self.session.answers_to(s)]
