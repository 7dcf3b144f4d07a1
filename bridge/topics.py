"""The topic schema of the protocol (v2; see docs/protocol.md), under a configurable prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PREFIX = "mesh/v2"
# The sender level of a log batch, and of its watermark, for a log synced without a
# gateway id: reserved, so it cannot be a gateway's (the fleet file refuses it as an id,
# and the archive a batch naming it).
UNNAMED_SENDER = "_unnamed"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class TopicKind(StrEnum):
    TRIGGER = "trigger"
    COMMAND_ALL = "cmd_all"
    COMMAND_CELL = "cmd_cell"
    COMMAND_UNIT = "cmd_unit"
    COMMAND_CAMERA = "cmd_camera"
    CANCEL = "cancel"
    ESCALATION = "escalation"
    ACK = "ack"
    RECORDING = "recording"
    ACTIVATION = "activation"
    RECEIPT = "receipt"
    PRESENCE = "presence"
    GATEWAY = "gateway"
    LOG_RECORDS = "log_records"
    LOG_SYNCED = "log_synced"


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    # The variable levels of the topic, in order (e.g. issuer and camera id for an ack).
    args: tuple[str, ...]


@dataclass(frozen=True)
class Topics:
    """Builds and parses every topic of the protocol under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(
                f"topic prefix {self.prefix!r} must be non-empty levels of "
                "[A-Za-z0-9._-] separated by '/', with no wildcards or leading/trailing '/'"
            )

    # --- publish topics -------------------------------------------------------
    def trigger(self, unit_id: str) -> str:
        return f"{self.prefix}/trigger/{unit_id}"

    def command_all(self) -> str:
        return f"{self.prefix}/cmd/all"

    def command_cell(self, cell: str) -> str:
        return f"{self.prefix}/cmd/cell/{cell}"

    def command_unit(self, unit_id: str) -> str:
        return f"{self.prefix}/cmd/unit/{unit_id}"

    def command_camera(self, camera_id: str) -> str:
        return f"{self.prefix}/cmd/camera/{camera_id}"

    def cancel(self, unit_id: str) -> str:
        return f"{self.prefix}/cancel/{unit_id}"

    def escalation(self, audience: str) -> str:
        return f"{self.prefix}/escalation/{audience}"

    def ack(self, issuer: str, camera_id: str) -> str:
        return f"{self.prefix}/ack/{issuer}/{camera_id}"

    def recording(self, issuer: str, camera_id: str) -> str:
        """A camera's recording started or stopped, to a gateway whose activation it is for."""
        return f"{self.prefix}/recording/{issuer}/{camera_id}"

    def activation(self, unit_id: str, activation_id: str) -> str:
        return f"{self.prefix}/activation/{unit_id}/{activation_id}"

    def receipt(self, unit_id: str) -> str:
        return f"{self.prefix}/receipt/{unit_id}"

    def presence(self, camera_id: str) -> str:
        return f"{self.prefix}/presence/{camera_id}"

    def gateway(self, gateway_id: str) -> str:
        return f"{self.prefix}/gateway/{gateway_id}"

    def log_records(self, log_id: str, gateway_id: str | None) -> str:
        """Batches of an edge activation log's records, on their way to the archive, under
        the gateway that sends them: the broker lets a gateway send only under its own
        name, and the archive stores a log's batches from one gateway only."""
        return f"{self.prefix}/log/{log_id}/records/{sender_level(gateway_id)}"

    def log_synced(self, log_id: str, gateway_id: str | None) -> str:
        """The archive's synced watermark of one log (retained), under the gateway that
        sent it, so that a car's bridge and ACL can name its own (log ids are random)."""
        return f"{self.prefix}/log/{log_id}/synced/{sender_level(gateway_id)}"

    def records_from(self, gateway_id: str) -> str:
        """Every log batch one gateway sends."""
        return f"{self.prefix}/log/+/records/{gateway_id}"

    def synced_for(self, gateway_id: str) -> str:
        """Every watermark of one gateway's logs."""
        return f"{self.prefix}/log/+/synced/{gateway_id}"

    # --- subscription filters -------------------------------------------------
    def acks_for(self, issuer: str) -> str:
        return f"{self.prefix}/ack/{issuer}/+"

    def recordings_for(self, issuer: str) -> str:
        return f"{self.prefix}/recording/{issuer}/+"

    def all_activations(self) -> str:
        return f"{self.prefix}/activation/+/+"

    def all_presence(self) -> str:
        return f"{self.prefix}/presence/+"

    def all_receipts(self) -> str:
        return f"{self.prefix}/receipt/+"

    def all_escalations(self) -> str:
        return f"{self.prefix}/escalation/+"

    def all_gateways(self) -> str:
        return f"{self.prefix}/gateway/+"

    def all_log_records(self) -> str:
        return f"{self.prefix}/log/+/records/+"

    # --- parsing ----------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic | None:
        """Classify a topic of this prefix; None for anything else."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if levels[0] == "cmd":
            return _parse_command(levels)
        if len(levels) == 2 and levels[0] in _ONE_LEVEL:
            return ParsedTopic(_ONE_LEVEL[levels[0]], (levels[1],))
        match levels:
            case ["ack", issuer, camera]:
                return ParsedTopic(TopicKind.ACK, (issuer, camera))
            case ["recording", issuer, camera]:
                return ParsedTopic(TopicKind.RECORDING, (issuer, camera))
            case ["activation", unit, activation]:
                return ParsedTopic(TopicKind.ACTIVATION, (unit, activation))
            case ["log", log_id, "records", gateway]:
                return ParsedTopic(TopicKind.LOG_RECORDS, (log_id, gateway))
            case ["log", log_id, "synced", gateway]:
                return ParsedTopic(TopicKind.LOG_SYNCED, (log_id, gateway))
        return None


# Topics of one variable level after their name: `{p}/{name}/{arg}`.
_ONE_LEVEL = {
    "trigger": TopicKind.TRIGGER,
    "cancel": TopicKind.CANCEL,
    "escalation": TopicKind.ESCALATION,
    "receipt": TopicKind.RECEIPT,
    "presence": TopicKind.PRESENCE,
    "gateway": TopicKind.GATEWAY,
}


def sender_level(gateway_id: str | None) -> str:
    """The topic level naming a log batch's (or watermark's) gateway."""
    return UNNAMED_SENDER if gateway_id is None else gateway_id  # "" is a level, not None


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: the broker gives each message to one member of
    ``group`` (mosquitto: round robin), so several subscribers split the load."""
    if not _PREFIX_RE.match(group) or "/" in group:
        raise ValueError(f"share group {group!r} must be one level of [A-Za-z0-9._-]")
    return f"$share/{group}/{topic_filter}"


def _parse_command(levels: list[str]) -> ParsedTopic | None:
    match levels:
        case ["cmd", "all"]:
            return ParsedTopic(TopicKind.COMMAND_ALL, ())
        case ["cmd", "cell", cell]:
            return ParsedTopic(TopicKind.COMMAND_CELL, (cell,))
        case ["cmd", "unit", unit]:
            return ParsedTopic(TopicKind.COMMAND_UNIT, (unit,))
        case ["cmd", "camera", camera]:
            return ParsedTopic(TopicKind.COMMAND_CAMERA, (camera,))
    return None
